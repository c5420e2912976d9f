#!/usr/bin/env bash
# The etcd side of the datastore benchmark: Debian's etcd-server (3.4) as
# three members on loopback, measured with ../shared/tools/etcdbench (or
# $ETCDBENCH_DIR) exactly as its README describes; then weft's store with
# the same method (go run ./bench/store), one after the other in the same
# minutes. Run as root from the repository root; prints both reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ETCDBENCH_DIR=${ETCDBENCH_DIR:-../shared/tools/etcdbench}
DURATION=${DURATION:-10s}

command -v etcd >/dev/null || ./scripts/install-deps.sh
[ -d "$ETCDBENCH_DIR" ] || { echo "etcd.sh: etcdbench not found at $ETCDBENCH_DIR (set ETCDBENCH_DIR)" >&2; exit 1; }

DATA=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$DATA"
}
trap cleanup EXIT

(cd "$ETCDBENCH_DIR" && go build -o "$DATA/etcdbench" .)

C=n1=http://127.0.0.1:23801,n2=http://127.0.0.1:23802,n3=http://127.0.0.1:23803
for i in 1 2 3; do
	etcd --name n$i --data-dir "$DATA/n$i" \
		--listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
		--listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
		--initial-cluster $C --initial-cluster-token bench --initial-cluster-state new \
		>"$DATA/n$i.log" 2>&1 &
	pids+=($!)
done
for _ in $(seq 100); do
	ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 endpoint health >/dev/null 2>&1 && break
	sleep 0.2
done

echo "## etcd 3.4 (three members, etcdbench)"
"$DATA/etcdbench" -endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 -duration "$DURATION"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

echo
echo "## weft store (three voters, bench/store)"
go run ./bench/store -duration "$DURATION"
