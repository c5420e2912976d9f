# weft — build, test, lint, install, demo.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin

GO        ?= go
GOOS      ?= linux
GOARCH    ?= $(shell $(GO) env GOARCH)
HOSTARCH  := $(shell $(GO) env GOHOSTARCH)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
PKG       := github.com/weftnet/weft
LDFLAGS   := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
# bin/weft for the machine's own architecture, bin/weft-linux-<arch> otherwise.
BIN       := $(if $(filter $(GOARCH),$(HOSTARCH)),bin/weft,bin/weft-$(GOOS)-$(GOARCH))

PREFIX    ?= /usr/local
DESTDIR   ?=
UNITDIR   ?= /etc/systemd/system
CONFDIR   ?= /etc/weft

# Tests come in three tiers (internal/testtier): unit tests need neither
# root nor the kernel's networking nor tools; kernel tests (each driver in
# fresh network namespaces) and end-to-end tests (real agents on a site of
# namespaces, e2e/) need root and the tools `make deps` installs.
# `make test` runs every tier and fails (WEFT_TEST_STRICT=1) where one
# cannot run; `make test-unit` (-short) runs the unit tier only, fast, also
# as root. -p 1 keeps the heavy namespace tests of different packages from
# fighting over this machine's 2 cores.
TEST_FLAGS ?= -count=1 -timeout 25m -p 1

.PHONY: all build build-all deps test test-unit check-test-unit fuzz lint install uninstall demo demo-down bench clean

all: build

build:
	CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/weft
	@ls -l $(BIN)

# Both release architectures.
build-all:
	$(MAKE) build GOARCH=amd64
	$(MAKE) build GOARCH=arm64

deps:
	./scripts/install-deps.sh

test: deps build
	WEFT_TEST_STRICT=1 WEFT_BIN=$(CURDIR)/bin/weft $(GO) test $(TEST_FLAGS) ./...

# The unit tier only: no root, no kernel, no tools needed; fast. Kernel and
# end-to-end tests skip (-short), also as root.
test-unit:
	$(GO) test -count=1 -short ./...

# Proof that test-unit means it: as root with nft and ethtool off PATH, once
# as is and once without the capabilities a kernel test needs, timed.
check-test-unit:
	./scripts/check-test-unit.sh

# Every fuzz target for FUZZTIME each, after replaying its committed seed
# corpus (testdata/fuzz/); CI runs it. FUZZTIME=2m make fuzz for a longer run.
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

install: build
	install -D -m 0755 bin/weft $(DESTDIR)$(PREFIX)/bin/weft
	install -D -m 0644 contrib/systemd/weft.service $(DESTDIR)$(UNITDIR)/weft.service
	install -D -m 0644 contrib/systemd/weft-wireguard.service $(DESTDIR)$(UNITDIR)/weft-wireguard.service
	sed -i 's#/usr/local/bin/weft#$(PREFIX)/bin/weft#' $(DESTDIR)$(UNITDIR)/weft.service $(DESTDIR)$(UNITDIR)/weft-wireguard.service
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	@if [ ! -e $(DESTDIR)$(CONFDIR)/weft.toml ]; then \
	  install -m 0600 config.example.toml $(DESTDIR)$(CONFDIR)/weft.toml; \
	  echo "installed $(DESTDIR)$(CONFDIR)/weft.toml (edit it, then: systemctl enable --now weft)"; \
	else echo "kept existing $(DESTDIR)$(CONFDIR)/weft.toml"; fi
	install -D -m 0644 config.example.toml $(DESTDIR)$(PREFIX)/share/doc/weft/config.example.toml

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/weft $(DESTDIR)$(UNITDIR)/weft.service $(DESTDIR)$(UNITDIR)/weft-wireguard.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/weft

# The walkthrough twice: over VXLAN (with BGP to BIRD and policy), then with
# WireGuard carrying every node pair. Each removes what it built.
demo: deps build
	./bin/weft demo
	./bin/weft demo --wireguard

demo-down: build
	./bin/weft demo down

bench: build
	./bench/run.sh

clean:
	rm -rf bin
