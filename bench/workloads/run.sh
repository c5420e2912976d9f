#!/usr/bin/env bash
# Workload networking benchmarks (issue 5), on real agents in test-bed
# network namespaces; needs root (and iperf3). Prints markdown reports:
#   - TCP throughput workload↔workload across nodes, natively and over VXLAN,
#     as a ratio to the raw underlay veth path between the two host
#     namespaces, measured in the same run, rounds interleaved (plus two
#     diagnostic paths; DIAG=false skips them);
#   - time from `weft workload add` being invoked to the workload being
#     reachable from every other node (p50/p90/p99), /26 and /30 blocks,
#     the adds that opened a new block on their own row, REACH_RUNS runs
#     on fresh clusters (median and range), a read-only CLI call as the
#     baseline;
#   - agent RSS with 0 and with 100 workloads on its node (same process),
#     (COUNT=3 BENCH=AgentRSS repeats it, or any benchmark, on fresh clusters).
#
#   bench/workloads/run.sh                              # all three
#   BENCH=Throughput ROUNDS=7 SECONDS_PER_RUN=10 bench/workloads/run.sh
#   BENCH=Reachability ADDS=100 REACH_RUNS=5 bench/workloads/run.sh
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
WEFT_BIN="${WEFT:-$work/weft}" "$work/workloads.test" -test.run '^$' -test.bench "${BENCH:-.}" -test.benchtime 1x \
	-test.timeout 60m -test.count "${COUNT:-1}" \
	-wl.iperf-rounds "${ROUNDS:-5}" -wl.iperf-seconds "${SECONDS_PER_RUN:-5}" -wl.diagnostics="${DIAG:-true}" \
	-wl.adds "${ADDS:-50}" -wl.reach-runs "${REACH_RUNS:-3}" -wl.reach-blocks "${REACH_BLOCKS:-26,30}" \
	-wl.rss-workloads "${RSS_WORKLOADS:-100}"
