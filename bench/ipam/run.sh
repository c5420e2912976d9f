#!/usr/bin/env bash
# IPAM benchmark (issue 4): allocation throughput with three nodes
# allocating concurrently and the latency of one allocation, each as a ratio
# to a plain store write measured in the same run. Real agents on the test
# bed (network namespaces); needs root. Prints a markdown report.
#
#   bench/ipam/run.sh                      # defaults: 5 rounds, 16 clients/node, 600 requests/node/round
#   ROUNDS=5 CLIENTS=8 PER_NODE=1000 bench/ipam/run.sh
#   PROFILE=/tmp/prof bench/ipam/run.sh    # CPU profiles of h1 in the last round
#   WEFT=/path/to/older/weft bench/ipam/run.sh   # measure another build
#
# Run it on an otherwise idle machine: the three agents and the clients
# share its CPUs, so anything else running skews throughput (the ratios,
# measured in the same run, are steadier).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $EUID -ne 0 ]]; then
	echo "bench/ipam/run.sh: needs root (network namespaces)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The product binary, built as `make build` does (stripped, -trimpath).
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft" ./cmd/weft
go test -c -o "$work/ipam.test" ./bench/ipam

cd bench/ipam
WEFT_BIN="${WEFT:-$work/weft}" "$work/ipam.test" -test.run '^$' -test.bench 'BenchmarkIPAMCluster' -test.benchtime 1x \
	-test.timeout 30m \
	-ipam.rounds "${ROUNDS:-5}" -ipam.clients "${CLIENTS:-16}" -ipam.per-node "${PER_NODE:-600}" -ipam.serial "${SERIAL:-1000}" ${PROFILE:+-ipam.profile "$PROFILE"}
