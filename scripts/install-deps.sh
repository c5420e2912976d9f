#!/usr/bin/env bash
# Installs what weft's tests and demo need on a Debian machine, if missing:
# Debian packages (with --no-install-recommends: wireguard-tools would pull a
# kernel image otherwise), Go modules, and staticcheck. Idempotent and quick
# when everything is present. Never starts the services the packages ship.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin

# command -> Debian package
declare -A want=(
	[ip]=iproute2
	[nsenter]=util-linux
	[nft]=nftables
	[iptables]=iptables
	[ipset]=ipset
	[flock]=util-linux
	[ping]=iputils-ping
	[nc]=netcat-openbsd
	[tcpdump]=tcpdump
	[iperf3]=iperf3
	[wg]=wireguard-tools
	[ethtool]=ethtool
	[systemd-analyze]=systemd
	[etcd]=etcd-server
	[etcdctl]=etcd-client
	[bird]=bird2
	[portmap]=containernetworking-plugins
	[bc]=bc
	[curl]=curl
)
missing=()
for cmd in "${!want[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/usr/lib/cni/$cmd" ]; then
		missing+=("${want[$cmd]}")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
		echo "install-deps: missing packages (${missing[*]}); run as root on Debian to install them" >&2
	else
		echo "install-deps: installing ${missing[*]}"
		# Packaged daemons (bird, etcd) must never start in the root namespace.
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		for svc in bird etcd; do
			systemctl disable --now "$svc" >/dev/null 2>&1 || true
			pkill -x "$svc" >/dev/null 2>&1 || true
		done
	fi
fi

cd "$here"
go mod download
if ! command -v staticcheck >/dev/null 2>&1; then
	GOFLAGS=-mod=mod go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
