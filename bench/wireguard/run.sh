#!/usr/bin/env bash
# WireGuard benchmarks (issue 13), on real agents in test-bed network
# namespaces; needs root, iperf3 and wireguard-tools. Prints markdown:
#   - TCP throughput workload↔workload over weft's WireGuard against a
#     standalone wireguard-go tunnel between two plain namespaces over a
#     veth (same wireguard-go, same MTU), in the same run, rounds
#     interleaved, both also against the bare veth;
#   - a node's join → encrypted reachability from every node;
#   - packets lost across kill -9 + restart of an agent and across key
#     rotations, under pings every 20 ms both ways; the handshake after a
#     restart;
#   - idle RSS and CPU of agents and device processes, with and without
#     WireGuard, side by side.
#
#   bench/wireguard/run.sh                                  # all four
#   BENCH=Throughput ROUNDS=7 SECONDS_PER_RUN=10 bench/wireguard/run.sh
#   BENCH=Join REPEATS=5 bench/wireguard/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $EUID -ne 0 ]]; then
	echo "bench/wireguard/run.sh: needs root (network namespaces)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The product binary, built as `make build` does, and the standalone
# wireguard-go of the same module version weft embeds.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft" ./cmd/weft
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/wireguard-go" golang.zx2c4.com/wireguard
go test -c -o "$work/wireguard.test" ./bench/wireguard

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cd bench/wireguard
WEFT_BIN="$work/weft" "$work/wireguard.test" -test.run '^$' -test.bench "${BENCH:-.}" -test.benchtime 1x \
	-test.timeout 30m -wg.wireguard-go "$work/wireguard-go" \
	-wg.iperf-rounds "${ROUNDS:-5}" -wg.iperf-seconds "${SECONDS_PER_RUN:-5}" \
	-wg.repeats "${REPEATS:-3}" -wg.idle-seconds "${IDLE_SECONDS:-60}"
