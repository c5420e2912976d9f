#!/usr/bin/env bash
# Policy dataplane benchmarks (issue 10), as root: the kernel side in
# network namespaces, the cluster side on real agents in test-bed
# namespaces. Prints markdown reports:
#   - ChangeToKernel: with 1,000 policies × 10 rules, 10,000 set members and
#     1,000 remote endpoints, store change → kernel for a policy edit and a
#     label change (p50/p99), against iptables-nft-restore of the same
#     ruleset (Felix's full rewrite), rounds alternating;
#   - ApplyToEnforced: `weft apply` returned → enforced on all 3 nodes;
#   - PacketRate: 64-byte UDP through a policy with 10,000 set members
#     against no policy;
#   - AgentAtScale: agent RSS with the world, cold start over it (time to
#     in sync, packets lost).
#
#   bench/policy/run.sh                     # all
#   BENCH=ChangeToKernel ROUNDS=5 bench/policy/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $EUID -ne 0 ]]; then
	echo "bench/policy/run.sh: needs root (network namespaces)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/weft" ./cmd/weft
go test -c -o "$work/policy.test" ./bench/policy
cd bench/policy
WEFT_BIN="$work/weft" "$work/policy.test" -test.run '^$' -test.bench "${BENCH:-.}" -test.benchtime 1x -test.timeout 60m -test.v \
	-pol.backends "${BACKENDS:-nftables,iptables}" -pol.rounds "${ROUNDS:-3}" -pol.changes "${CHANGES:-200}" -pol.restores "${RESTORES:-5}" \
	-pol.rate-rounds "${RATE_ROUNDS:-5}" -pol.rate-seconds "${RATE_SECONDS:-3}" -pol.applies "${APPLIES:-100}" 2>&1 |
	grep -v '^=== RUN'
