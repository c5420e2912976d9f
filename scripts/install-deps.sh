#!/usr/bin/env bash
# Installs what weft's tests, benchmarks and demo need on a Debian machine,
# if missing: Debian packages (with --no-install-recommends: wireguard-tools
# would pull a kernel image otherwise), Go modules, and staticcheck.
# Idempotent and quick when everything is present.
#
# It never starts, stops or kills anything: the daemons some packages ship
# (bird, etcd, frr) are kept from starting by a policy-rc.d that denies every
# start while apt-get runs, and the services of the packages it installed
# are disabled afterwards (systemctl disable, not --now). Processes it did
# not start are never touched, whatever their name.
#
# WEFT_DEPS_POLICY_RC_D and WEFT_DEPS_EXTRA_DIRS exist for its test.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
gopath=$(go env GOPATH 2>/dev/null || true)
export PATH=$PATH:/usr/local/go/bin:${gopath:-/root/go}/bin
policy_rc_d=${WEFT_DEPS_POLICY_RC_D:-/usr/sbin/policy-rc.d}
# Where a command counts as present even when not in PATH (non-root PATHs
# lack /usr/sbin).
extra_dirs=${WEFT_DEPS_EXTRA_DIRS-/usr/sbin /usr/lib/cni /usr/lib/frr}

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
	[vtysh]=frr
	[stress-ng]=stress-ng
	[portmap]=containernetworking-plugins
	[bc]=bc
	[curl]=curl
)
# Debian package -> the service it ships, disabled right after install.
declare -A service=(
	[bird2]=bird
	[etcd-server]=etcd
	[frr]=frr
)

present() {
	command -v "$1" >/dev/null 2>&1 && return 0
	local d
	for d in $extra_dirs; do
		[ -x "$d/$1" ] && return 0
	done
	return 1
}

missing=()
for cmd in "${!want[@]}"; do
	if ! present "$cmd"; then
		missing+=("${want[$cmd]}")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
		echo "install-deps: missing packages (${missing[*]}); run as root on Debian to install them" >&2
	else
		echo "install-deps: installing ${missing[*]}"
		# Packaged daemons must never start in the root namespace. An
		# existing policy-rc.d (the administrator's, or another run's) is
		# left alone.
		if [ ! -e "$policy_rc_d" ]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy_rc_d" && chmod +x "$policy_rc_d"
			trap 'rm -f "$policy_rc_d"' EXIT
		fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# Wait for a concurrent apt/dpkg run instead of failing on its lock.
		apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
		for pkg in "${missing[@]}"; do
			if [ -n "${service[$pkg]:-}" ]; then
				systemctl disable "${service[$pkg]}" >/dev/null 2>&1 || true
			fi
		done
	fi
fi

cd "$here"
go mod download
if ! command -v staticcheck >/dev/null 2>&1; then
	GOFLAGS=-mod=mod go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
