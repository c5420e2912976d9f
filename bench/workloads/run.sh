#!/usr/bin/env bash
# Workload networking benchmarks (issue 5), on real agents in test-bed
# network namespaces; needs root (and iperf3). Prints markdown reports:
#   - TCP throughput workload↔workload across nodes, natively and over VXLAN,
#     as a ratio to the raw underlay veth path between the two host
#     namespaces, measured in the same run, rounds interleaved (plus two
#     diagnostic paths; DIAG=false skips them);
#   - time from `weft workload add` returning to the workload being
#     reachable from every other node (p50/p90/p99), /26 and /29 blocks;
#   - agent RSS with 0 and with 100 workloads on its node (same process).
#
#   bench/workloads/run.sh                              # all three
#   BENCH=Throughput ROUNDS=7 SECONDS_PER_RUN=10 bench/workloads/run.sh
#   BENCH=Reachability ADDS=100 bench/workloads/run.sh
#
# Run it on an otherwise idle machine: the agents, iperf3 and the probes
# share its CPUs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $EUID -ne 0 ]]; then
	echo "bench/workloads/run.sh: needs root (network namespaces)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The product binary, built as `make build` does (stripped, -trimpath).
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft" ./cmd/weft
go test -c -o "$work/workloads.test" ./bench/workloads

cd bench/workloads
WEFT_BIN="$work/weft" "$work/workloads.test" -test.run '^$' -test.bench "${BENCH:-.}" -test.benchtime 1x \
	-test.timeout 30m \
	-wl.iperf-rounds "${ROUNDS:-5}" -wl.iperf-seconds "${SECONDS_PER_RUN:-5}" -wl.diagnostics="${DIAG:-true}" \
	-wl.adds "${ADDS:-50}" -wl.rss-workloads "${RSS_WORKLOADS:-100}"
