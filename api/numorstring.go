package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Port is a rule or endpoint port: a single number, an inclusive range
// written "min:max", or a named port (calico.md §2.2). It marshals like
// Calico's numorstring.Port: a number for a single port, a string
// otherwise.
type Port struct {
	MinPort  uint16
	MaxPort  uint16
	PortName string
}

// SinglePort is the port n.
func SinglePort(n uint16) Port { return Port{MinPort: n, MaxPort: n} }

// PortRange is the inclusive range min..max.
func PortRange(min, max uint16) (Port, error) {
	if min > max {
		return Port{}, fmt.Errorf("invalid port range %d:%d: the first port is greater than the second", min, max)
	}
	return Port{MinPort: min, MaxPort: max}, nil
}

// NamedPort is a port referred to by the name an endpoint gives it.
func NamedPort(name string) Port { return Port{PortName: name} }

// ParsePort parses "80", "1000:2000" or a port name.
func ParsePort(s string) (Port, error) {
	if s == "" {
		return Port{}, fmt.Errorf("empty port")
	}
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return SinglePort(uint16(n)), nil
	}
	if lo, hi, ok := strings.Cut(s, ":"); ok && isDigits(lo) && isDigits(hi) {
		min, err1 := strconv.ParseUint(lo, 10, 16)
		max, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil {
			return Port{}, fmt.Errorf("invalid port range %q: ports must be between 0 and 65535", s)
		}
		return PortRange(uint16(min), uint16(max))
	}
	if isDigits(s) {
		return Port{}, fmt.Errorf("invalid port %q: must be between 0 and 65535", s)
	}
	return NamedPort(s), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsNamed reports whether the port is a named port.
func (p Port) IsNamed() bool { return p.PortName != "" }

// String is the port as written in YAML: "80", "1000:2000" or the name.
func (p Port) String() string {
	switch {
	case p.PortName != "":
		return p.PortName
	case p.MinPort == p.MaxPort:
		return strconv.Itoa(int(p.MinPort))
	default:
		return fmt.Sprintf("%d:%d", p.MinPort, p.MaxPort)
	}
}

// MarshalJSON writes a single port as a number, anything else as a string.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.PortName == "" && p.MinPort == p.MaxPort {
		return []byte(strconv.Itoa(int(p.MinPort))), nil
	}
	return json.Marshal(p.String())
}

// UnmarshalJSON accepts a number or a string (number, "min:max" or name).
func (p *Port) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParsePort(s)
		if err != nil {
			return err
		}
		*p = v
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 16)
	if err != nil {
		return fmt.Errorf("invalid port %s: must be a number between 0 and 65535, a range \"min:max\" or a port name", b)
	}
	*p = SinglePort(uint16(n))
	return nil
}

// Protocol is an IP protocol given by name (TCP, UDP, ICMP, ICMPv6, SCTP,
// UDPLite; case-insensitive) or by number (1-255). It marshals back the
// way it was written.
type Protocol struct {
	// Name is set for a named protocol, as written.
	Name string
	// Number is set for a numeric protocol (Name empty).
	Number uint8
}

// Protocol names as Calico spells them.
const (
	ProtocolTCP     = "TCP"
	ProtocolUDP     = "UDP"
	ProtocolICMP    = "ICMP"
	ProtocolICMPv6  = "ICMPv6"
	ProtocolSCTP    = "SCTP"
	ProtocolUDPLite = "UDPLite"
)

var protocolNumbers = map[string]uint8{
	"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136,
}

var protocolNames = map[uint8]string{
	6: ProtocolTCP, 17: ProtocolUDP, 1: ProtocolICMP, 58: ProtocolICMPv6, 132: ProtocolSCTP, 136: ProtocolUDPLite,
}

// ProtocolFromString is the protocol with that name; a decimal string is
// taken as a number, as Calico does.
func ProtocolFromString(s string) Protocol {
	if n, err := strconv.ParseUint(s, 10, 8); err == nil {
		return Protocol{Number: uint8(n)}
	}
	return Protocol{Name: s}
}

// ProtocolFromNumber is the protocol with that number.
func ProtocolFromNumber(n uint8) Protocol { return Protocol{Number: n} }

// NumValue is the IP protocol number, whether the protocol was written as a
// name or a number; ok is false for an unknown name.
func (p Protocol) NumValue() (n uint8, ok bool) {
	if p.Name == "" {
		return p.Number, true
	}
	n, ok = protocolNumbers[strings.ToLower(p.Name)]
	return n, ok
}

// Canonical is the protocol in Calico's spelling ("TCP", "ICMPv6"), or the
// decimal number for protocols without a name.
func (p Protocol) Canonical() string {
	n, ok := p.NumValue()
	if !ok {
		return p.Name
	}
	if name, ok := protocolNames[n]; ok {
		return name
	}
	return strconv.Itoa(int(n))
}

// SupportsPorts reports whether ports apply to the protocol (TCP, UDP and
// SCTP, by name or number).
func (p Protocol) SupportsPorts() bool {
	n, ok := p.NumValue()
	return ok && (n == 6 || n == 17 || n == 132)
}

// IsICMP reports whether the protocol is ICMP (v4).
func (p Protocol) IsICMP() bool { n, ok := p.NumValue(); return ok && n == 1 }

// IsICMPv6 reports whether the protocol is ICMPv6.
func (p Protocol) IsICMPv6() bool { n, ok := p.NumValue(); return ok && n == 58 }

// String is the protocol as written.
func (p Protocol) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Number))
}

// MarshalJSON writes a name as a string and a number as a number.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return []byte(strconv.Itoa(int(p.Number))), nil
}

// UnmarshalJSON accepts a number or a string.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = ProtocolFromString(s)
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 8)
	if err != nil {
		return fmt.Errorf("invalid protocol %s: must be a name or a number between 1 and 255", b)
	}
	*p = Protocol{Number: uint8(n)}
	return nil
}

// ASNumber is a BGP AS number. It accepts plain ("65000") or asdot
// ("1.10") notation and marshals as a number.
type ASNumber uint32

// ParseASNumber parses plain or asdot notation.
func ParseASNumber(s string) (ASNumber, error) {
	if hi, lo, ok := strings.Cut(s, "."); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("invalid AS number %q: asdot parts must be between 0 and 65535", s)
		}
		return ASNumber(h<<16 | l), nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid AS number %q: must be between 0 and 4294967295 or asdot x.y", s)
	}
	return ASNumber(n), nil
}

func (a ASNumber) String() string { return strconv.FormatUint(uint64(a), 10) }

// UnmarshalJSON accepts a number or a string in plain or asdot notation.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParseASNumber(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Duration is a time.Duration written as a Go duration string ("90s",
// "1m30s"), like Kubernetes' metav1.Duration.
type Duration struct {
	time.Duration
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if !bytes.HasPrefix(b, []byte(`"`)) {
		return fmt.Errorf("invalid duration %s: must be a string such as \"90s\"", b)
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}
