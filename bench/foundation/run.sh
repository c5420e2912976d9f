#!/usr/bin/env bash
# Foundation measurements (issue: binary, config, agent lifecycle):
#   - size of the static binary, against a static Go baseline binary;
#   - wall time of `weft version`, against the baseline's `version`;
#   - agent idle RSS and CPU over 60 s with one node, against the baseline
#     process idling for the same 60 s.
# Prints a markdown table; run from the repository root as root. The agent
# runs in a network namespace of its own (unshare -n).
set -euo pipefail
cd "$(dirname "$0")/../.."
IDLE=${IDLE:-60}
RUNS=${RUNS:-200}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

make -s build >/dev/null
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/baseline" ./bench/foundation/baseline

size() { stat -c %s "$1"; }
walltime() { # mean seconds per run of "$@"
	local start end
	start=$(date +%s%N)
	for ((i = 0; i < RUNS; i++)); do "$@" >/dev/null; done
	end=$(date +%s%N)
	echo "scale=6; ($end - $start) / $RUNS / 1000000000" | bc
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The agent programs the network namespace it runs in (sysctls, nftables,
# VXLAN): give it a private one that vanishes with it, never the machine's.
ADDR=10.255.78.1
cat >"$work/weft.toml" <<TOML
[node]
name = "bench"
address = "$ADDR"
data_dir = "$work/data"
[cluster]
listen = "$ADDR:17700"
[api]
socket = "$work/weft.sock"
[metrics]
listen = "$ADDR:19091"
[bgp]
enabled = false
TOML

unshare --net -- sh -c "ip link set lo up && ip addr add $ADDR/32 dev lo && exec ./bin/weft agent --config $work/weft.toml" >"$work/agent.log" 2>&1 &
pids+=($!); agent=$!
"$work/baseline" &
pids+=($!); base=$!
for _ in $(seq 100); do nsenter -t "$agent" -n curl -fsS "http://$ADDR:19091/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
a0=$(cpu_ticks $agent); b0=$(cpu_ticks $base)
sleep "$IDLE"
a1=$(cpu_ticks $agent); b1=$(cpu_ticks $base)
hz=$(getconf CLK_TCK)
arss=$(rss_kb $agent); brss=$(rss_kb $base)
acpu=$(echo "scale=4; ($a1 - $a0) / $hz / $IDLE * 100" | bc)
bcpu=$(echo "scale=4; ($b1 - $b0) / $hz / $IDLE * 100" | bc)

wsize=$(size bin/weft); bsize=$(size "$work/baseline")
wt=$(walltime ./bin/weft version); bt=$(walltime "$work/baseline" version)

ratio() { echo "scale=2; $1 / $2" | bc; }
echo "| measure | weft | baseline | ratio |"
echo "| --- | --- | --- | --- |"
echo "| binary size (MB) | $(echo "scale=1; $wsize/1048576" | bc) | $(echo "scale=1; $bsize/1048576" | bc) | $(ratio $wsize $bsize) |"
echo "| \`version\` wall time (ms, mean of $RUNS) | $(echo "scale=2; $wt*1000" | bc) | $(echo "scale=2; $bt*1000" | bc) | $(ratio $wt $bt) |"
echo "| idle RSS after ${IDLE}s (MB) | $(echo "scale=1; $arss/1024" | bc) | $(echo "scale=1; $brss/1024" | bc) | $(ratio $arss $brss) |"
echo "| idle CPU over ${IDLE}s (% of one core) | $acpu | $bcpu | - |"
