#!/usr/bin/env bash
# Foundation measurements (issue: binary, config, agent lifecycle):
#   - size of the static binary, against a static Go baseline binary;
#   - wall time of `weft version`, against the baseline's `version`
#     (ROUNDS rounds of RUNS runs each, alternating which runs first);
#   - agent idle RSS (and its anonymous / file-backed split) and CPU over
#     IDLE seconds with one node, against the baseline process idling for
#     the same seconds: ROUNDS rounds, a fresh agent and baseline each.
# Prints markdown: every round, then the median and range over the rounds.
# Run from the repository root as root. The agent runs in a network
# namespace of its own (unshare -n).
set -euo pipefail
cd "$(dirname "$0")/../.."
IDLE=${IDLE:-60}
RUNS=${RUNS:-200}
ROUNDS=${ROUNDS:-3}
# WEFT: another weft binary to measure in place of bin/weft (e.g. an older build).
WEFT=${WEFT:-./bin/weft}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

make -s build >/dev/null
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/baseline" ./bench/foundation/baseline

size() { stat -c %s "$1"; }
walltime() { # mean milliseconds per run of "$@"
	local start end
	start=$(date +%s%N)
	for ((i = 0; i < RUNS; i++)); do "$@" >/dev/null; done
	end=$(date +%s%N)
	echo "scale=3; ($end - $start) / $RUNS / 1000000" | bc
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mb() { echo "scale=1; $1/1024" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
# stats "x y z" -> "median [min–max]" (values as given)
stats() { tr ' ' '\n' <<<"$1" | sort -g | awk '{v[NR]=$1} END {m = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%s [%s–%s]", m, v[1], v[NR]}'; }

# The agent programs the network namespace it runs in (sysctls, nftables,
# VXLAN): give it a private one that vanishes with it, never the machine's.
ADDR=10.255.78.1
hz=$(getconf CLK_TCK)
echo "# $(date -u +%FT%TZ) $(git describe --always --dirty); load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | first | \`version\` ms weft / baseline | idle RSS MB weft (anon + file) / baseline | idle CPU % weft / baseline | load |"
echo "| --- | --- | --- | --- | --- | --- |"
vw=() vb=() rw=() ra=() rf=() rb=() cw=() cb=()
for ((r = 1; r <= ROUNDS; r++)); do
	rm -rf "$work/data" "$work/weft.sock"
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
	unshare --net -- sh -c "ip link set lo up && ip addr add $ADDR/32 dev lo && exec $WEFT agent --config $work/weft.toml" >"$work/agent.log" 2>&1 &
	agent=$!
	pids+=("$agent")
	"$work/baseline" &
	base=$!
	pids+=("$base")
	for _ in $(seq 300); do nsenter -t "$agent" -n curl -fsS "http://$ADDR:19091/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
	a0=$(cpu_ticks $agent); b0=$(cpu_ticks $base)
	sleep "$IDLE"
	a1=$(cpu_ticks $agent); b1=$(cpu_ticks $base)
	arss=$(status_kb $agent VmRSS); aanon=$(status_kb $agent RssAnon); afile=$(status_kb $agent RssFile); brss=$(status_kb $base VmRSS)
	kill "$agent" "$base"; wait "$agent" "$base" 2>/dev/null || true
	acpu=$(echo "scale=2; ($a1 - $a0) * 100 / $hz / $IDLE" | bc)
	bcpu=$(echo "scale=2; ($b1 - $b0) * 100 / $hz / $IDLE" | bc)
	# `version`, alternating which runs first.
	if ((r % 2)); then
		first=weft; wt=$(walltime "$WEFT" version); bt=$(walltime "$work/baseline" version)
	else
		first=baseline; bt=$(walltime "$work/baseline" version); wt=$(walltime "$WEFT" version)
	fi
	echo "| $r | $first | $wt / $bt | $(mb $arss) ($(mb $aanon) + $(mb $afile)) / $(mb $brss) | $acpu / $bcpu | $(cut -d' ' -f1 /proc/loadavg) |"
	vw+=("$wt"); vb+=("$bt"); rw+=("$(mb $arss)"); ra+=("$(mb $aanon)"); rf+=("$(mb $afile)"); rb+=("$(mb $brss)"); cw+=("$acpu"); cb+=("$bcpu")
done

wsize=$(size "$WEFT"); bsize=$(size "$work/baseline")
vr=() rr=()
for ((i = 0; i < ROUNDS; i++)); do vr+=("$(ratio "${vw[i]}" "${vb[i]}")"); rr+=("$(ratio "${rw[i]}" "${rb[i]}")"); done
echo
echo "| measure (median [range] over $ROUNDS rounds) | weft | baseline | ratio (per round) |"
echo "| --- | --- | --- | --- |"
echo "| binary size (MB) | $(echo "scale=1; $wsize/1048576" | bc) | $(echo "scale=1; $bsize/1048576" | bc) | $(ratio $wsize $bsize) |"
echo "| \`version\` wall time (ms, mean of $RUNS) | $(stats "${vw[*]}") | $(stats "${vb[*]}") | $(stats "${vr[*]}") |"
echo "| idle RSS after ${IDLE}s (MB) | $(stats "${rw[*]}") | $(stats "${rb[*]}") | $(stats "${rr[*]}") |"
echo "| … of which anonymous / file-backed (MB) | $(stats "${ra[*]}") / $(stats "${rf[*]}") | | |"
echo "| idle CPU over ${IDLE}s (% of one core) | $(stats "${cw[*]}") | $(stats "${cb[*]}") | - |"
echo
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
