#!/usr/bin/env bash
# Datastore at scale (issue 14): N real agents on the test bed (one network
# namespace each; 3 voters, the rest non-voters), at each size: formation,
# idle CPU and RSS of the leader and followers, write-to-visible latency and
# CPU per write, concurrent `weft workload add`s, add-to-reachable, leader
# kill to writes again, voters after settling. Needs root. Prints markdown.
#
#   bench/scale/run.sh                              # 10,20,30,50 nodes
#   NODES=50 BASELINE=9142046 bench/scale/run.sh    # and the base commit's binary at 50, same run
#   NODES=20 HOG=2 bench/scale/run.sh               # with two busy loops beside the agents
#   NODES=50 PHASES=idle PROFILE=/tmp/p bench/scale/run.sh
#
# BASELINE is a git revision: its weft binary is built from `git archive`
# and measured the same way, alternating which runs first, at the sizes in
# BASELINE_NODES (default 50). Check `uptime` first: 50 agents share the
# machine's CPUs with whatever else runs there.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $EUID -ne 0 ]]; then
	echo "bench/scale/run.sh: needs root (network namespaces)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The product binary, built as `make build` does (stripped, -trimpath).
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft" ./cmd/weft
go test -c -o "$work/scale.test" ./bench/scale
baseline=()
if [[ -n "${BASELINE:-}" ]]; then
	mkdir "$work/base"
	git archive "$BASELINE" | tar -x -C "$work/base"
	(cd "$work/base" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft-base" ./cmd/weft)
	baseline=(-scale.baseline "$work/weft-base" -scale.baseline-nodes "${BASELINE_NODES:-50}")
fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

cd bench/scale
WEFT_BIN="$work/weft" "$work/scale.test" -test.run '^$' -test.bench BenchmarkScale -test.benchtime 1x \
	-test.timeout 3h \
	-scale.nodes "${NODES:-10,20,30,50}" -scale.hog "${HOG:-0}" -scale.phases "${PHASES:-idle,visible,adds,reach,kill}" \
	-scale.idle "${IDLE:-30s}" -scale.settle "${SETTLE:-45s}" -scale.profile "${PROFILE:-}" "${baseline[@]}"
