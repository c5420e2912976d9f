#!/usr/bin/env bash
# Proves that `make test-unit` is the unit tier and nothing more (issue 8):
# run as root on a machine without nft or ethtool, it must pass within a
# time budget (BUDGET, default 60 s) and run no kernel or end-to-end test.
#
# 1. PATH is rebuilt without nft and ethtool (every other command stays).
# 2. `make test-unit` runs as root, timed.
# 3. It runs again as root but with CAP_NET_ADMIN and CAP_SYS_ADMIN dropped
#    from the bounding set: a kernel or end-to-end test that ran could not
#    create a namespace or an interface and would fail, so a pass shows that
#    none ran.
# Warm the build cache first (make build, go vet ./...) for a fair time: a
# cold cache measures the compiler, not the tests.
set -euo pipefail

budget=${BUDGET:-60}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
	echo "check-test-unit: run as root: the point is that root does not make test-unit run more" >&2
	exit 2
fi
if ! command -v setpriv >/dev/null; then
	echo "check-test-unit: needs setpriv (util-linux)" >&2
	exit 2
fi

shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
IFS=: read -ra dirs <<<"$PATH:/usr/local/go/bin:${HOME:-/root}/go/bin"
for d in "${dirs[@]}"; do
	[ -d "$d" ] || continue
	for f in "$d"/*; do
		n=${f##*/}
		case $n in nft | ethtool) continue ;; esac
		if [ -x "$f" ] && [ ! -e "$shim/$n" ]; then
			ln -s "$f" "$shim/$n"
		fi
	done
done
export PATH=$shim
for tool in nft ethtool; do
	if command -v "$tool" >/dev/null; then
		echo "check-test-unit: $tool is still on PATH" >&2
		exit 1
	fi
done

over=0
run() {
	local what=$1
	shift
	local start end ms
	start=$(date +%s%N)
	if ! "$@" make -s -C "$here" test-unit >"$shim/out" 2>&1; then
		cat "$shim/out"
		echo "check-test-unit: make test-unit FAILED ($what)" >&2
		exit 1
	fi
	end=$(date +%s%N)
	ms=$(((end - start) / 1000000))
	printf 'check-test-unit: passed %s in %d.%03ds (load %s)\n' "$what" $((ms / 1000)) $((ms % 1000)) "$(cut -d' ' -f1-3 /proc/loadavg)"
	if [ $((ms / 1000)) -ge "$budget" ]; then
		echo "check-test-unit: over the budget of ${budget}s (a busy machine inflates it: see the load)" >&2
		over=1
	fi
}

run "as root without nft and ethtool" env
run "as root without nft, ethtool, CAP_NET_ADMIN and CAP_SYS_ADMIN (so no kernel test ran)" \
	setpriv --bounding-set -net_admin,-sys_admin --
exit $over
