#!/usr/bin/env bash
# The datastore comparison (issue 9): weft and etcd the way users reach
# them. Three servers of each, every one in its own network namespace of the
# test bed, replicating over mutual TLS; the client a separate process on
# the local server's unix socket (weft: the agent's local API; etcd: gRPC,
# measured by ../shared/tools/etcdbench). ROUNDS rounds, each with fresh
# clusters of both, alternating which store runs first; it prints every
# round and a table of medians, ranges and weft/etcd ratios. Needs root and
# Debian's etcd-server (scripts/install-deps.sh). About 2 minutes a round.
#
#   bench/store/run.sh                         # 3 rounds, 10 s per test
#   ROUNDS=5 DURATION=10s bench/store/run.sh
#
# Run it on an otherwise quiet machine (see `uptime`): the servers and the
# client share its CPUs. At the end (INPROCESS=0 skips it) it runs weft's
# store alone in one process (`go run ./bench/store`: no agents, no
# sockets), a ceiling that is not comparable with etcd (see README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $EUID -ne 0 ]]; then
	echo "bench/store/run.sh: needs root (network namespaces)" >&2
	exit 1
fi
export PATH=$PATH:/usr/local/go/bin
ETCDBENCH_DIR=${ETCDBENCH_DIR:-../shared/tools/etcdbench}
command -v etcd >/dev/null || ./scripts/install-deps.sh
[ -d "$ETCDBENCH_DIR" ] || { echo "run.sh: etcdbench not found at $ETCDBENCH_DIR (set ETCDBENCH_DIR)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The product binary, built as `make build` does (stripped, -trimpath).
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft" ./cmd/weft
(cd "$ETCDBENCH_DIR" && go build -o "$work/etcdbench" .)
go test -c -o "$work/store.test" ./bench/store
go build -o "$work/store-inprocess" ./bench/store

echo "# $(date -u +%FT%TZ) $(uname -r); etcd $(etcd --version | sed -n 's/^etcd Version: //p'); weft $(git describe --always --dirty)"
cd bench/store
WEFT_BIN="$work/weft" "$work/store.test" -test.run '^$' -test.bench 'BenchmarkStoreVsEtcd' -test.benchtime 1x \
	-test.timeout 60m \
	-compare.rounds "${ROUNDS:-3}" -compare.duration "${DURATION:-10s}" -compare.etcdbench "$work/etcdbench" \
	${ONLY:+-compare.only "$ONLY"}

if [ "${INPROCESS:-1}" = 1 ] && [ -z "${ONLY:-}" ]; then
	echo
	echo "## weft's store alone, in-process (3 voters in one process, no agent, no socket): NOT comparable with etcd"
	echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
	# (raft's complaints while the three nodes shut down are left out)
	"$work/store-inprocess" -tests put1,putN,watch,read -duration "${DURATION:-10s}" \
		2> >(grep -v 'level=ERROR .*component=raft' >&2)
fi
