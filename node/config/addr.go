package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Addresses returns the underlay addresses written in node.address: at most
// one IPv4 and one IPv6. Either is the zero Addr when not configured (the
// agent then autodetects it) or when node.address is invalid (Validate
// reports that).
func (n Node) Addresses() (v4, v6 netip.Addr) {
	v4, v6, _ = parseNodeAddress(n.Address)
	return v4, v6
}

// ListenAddrPort is cluster.listen as an address and port; the zero value
// when it is invalid (Validate reports that).
func (c Cluster) ListenAddrPort() netip.AddrPort {
	ap, _ := parseIPPort(c.Listen)
	return ap
}

// AdvertiseAddrPort is the address other nodes use to reach this one:
// cluster.advertise when set; otherwise node.address (IPv4 preferred) with
// the cluster.listen port; otherwise cluster.listen when it names a specific
// address. The zero value means the agent has to autodetect the address.
func (c Config) AdvertiseAddrPort() netip.AddrPort {
	if c.Cluster.Advertise != "" {
		ap, _ := parseIPPort(c.Cluster.Advertise)
		return ap
	}
	listen := c.Cluster.ListenAddrPort()
	if !listen.IsValid() {
		return netip.AddrPort{}
	}
	v4, v6 := c.Node.Addresses()
	switch {
	case v4.IsValid():
		return netip.AddrPortFrom(v4, listen.Port())
	case v6.IsValid():
		return netip.AddrPortFrom(v6, listen.Port())
	case !listen.Addr().IsUnspecified():
		return listen
	}
	return netip.AddrPort{}
}

// Prefix is the pool's CIDR; the zero value when it is invalid.
func (p Pool) Prefix() netip.Prefix {
	pfx, _ := netip.ParsePrefix(p.CIDR)
	return pfx
}

// SlogLevel is log.level as a slog.Level (info when invalid).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// ProtoPort is one failsafe entry: traffic to (inbound) or from (outbound)
// the host on this protocol and port, optionally only from/to Net, that
// policy never blocks. Written "tcp:22" or "tcp:10.0.0.0/8:22", as Calico's
// failsafeInboundHostPorts (calico.md §1.14).
type ProtoPort struct {
	Protocol string       // "tcp", "udp" or "sctp"
	Net      netip.Prefix // zero: any address
	Port     uint16       // 1-65535
}

// String renders p in the form ParseProtoPort reads.
func (p ProtoPort) String() string {
	if p.Net.IsValid() {
		return fmt.Sprintf("%s:%s:%d", p.Protocol, p.Net, p.Port)
	}
	return fmt.Sprintf("%s:%d", p.Protocol, p.Port)
}

// ParseProtoPort reads "PROTO:PORT" or "PROTO:CIDR:PORT" (an IPv6 CIDR may be
// written bare or in brackets: "tcp:fd00::/8:22", "tcp:[fd00::/8]:22").
func ParseProtoPort(s string) (ProtoPort, error) {
	const form = `"tcp|udp|sctp:PORT" or "tcp|udp|sctp:CIDR:PORT"`
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return ProtoPort{}, fmt.Errorf("must be %s, got %q", form, s)
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return ProtoPort{}, fmt.Errorf("protocol must be tcp, udp or sctp, got %q in %q", proto, s)
	}
	pp := ProtoPort{Protocol: proto}
	portText := rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		netText := strings.TrimSuffix(strings.TrimPrefix(rest[:i], "["), "]")
		portText = rest[i+1:]
		pfx, err := parsePrefix(netText)
		if err != nil {
			return ProtoPort{}, fmt.Errorf("%v in %q", err, s)
		}
		pp.Net = pfx
	}
	port, err := parsePort(portText)
	if err != nil {
		return ProtoPort{}, fmt.Errorf("%v in %q", err, s)
	}
	pp.Port = uint16(port)
	return pp, nil
}

// InboundFailsafe is dataplane.failsafe_inbound parsed (invalid entries,
// which Validate reports, are left out).
func (d Dataplane) InboundFailsafe() []ProtoPort { return parseProtoPorts(d.FailsafeInbound) }

// OutboundFailsafe is dataplane.failsafe_outbound parsed.
func (d Dataplane) OutboundFailsafe() []ProtoPort { return parseProtoPorts(d.FailsafeOutbound) }

func parseProtoPorts(list []string) []ProtoPort {
	var out []ProtoPort
	for _, s := range list {
		if pp, err := ParseProtoPort(s); err == nil {
			out = append(out, pp)
		}
	}
	return out
}

// parseNodeAddress reads node.address: "", "v4", "v6", "v4,v6" or "v6,v4".
func parseNodeAddress(s string) (v4, v6 netip.Addr, err error) {
	if strings.TrimSpace(s) == "" {
		return netip.Addr{}, netip.Addr{}, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		a, err := netip.ParseAddr(part)
		if err != nil {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not an IP address (want an IPv4 and/or an IPv6 address, comma separated)", part)
		}
		if a.Zone() != "" {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q: zoned addresses are not allowed", part)
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a unicast address of this node", part)
		}
		if a.Is4() {
			if v4.IsValid() {
				return netip.Addr{}, netip.Addr{}, fmt.Errorf("more than one IPv4 address (%s and %s)", v4, a)
			}
			v4 = a
		} else {
			if v6.IsValid() {
				return netip.Addr{}, netip.Addr{}, fmt.Errorf("more than one IPv6 address (%s and %s)", v6, a)
			}
			v6 = a
		}
	}
	return v4, v6, nil
}

// splitHostPort splits "host:port" and checks the port is 1-65535.
func splitHostPort(s string) (host string, port int, err error) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("must be host:port (IPv6 in brackets: [::1]:7700), got %q", s)
	}
	port, err = parsePort(portText)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

// parseIPPort reads "IP:port" where IP is a literal address without zone.
func parseIPPort(s string) (netip.AddrPort, error) {
	host, port, err := splitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("host must be an IP address (0.0.0.0 or [::] for all), got %q", host)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1-65535", n)
	}
	return int(n), nil
}

// parsePrefix reads a CIDR that must be masked (no host bits set).
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}
