package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

// Registers: the 16-byte register 1 for single values, the 32-bit
// registers from NFT_REG32_00 (8) for concatenated keys.
const (
	reg1     = 1
	reg32_00 = 8
)

// rb builds one rule: expressions and, alongside, a text that describes
// them (the content hash of the chain is taken over these texts).
type rb struct {
	exprs []expr.Any
	desc  []string
}

func (b *rb) add(desc string, es ...expr.Any) *rb {
	b.exprs = append(b.exprs, es...)
	b.desc = append(b.desc, desc)
	return b
}

func (b *rb) text() string { return strings.Join(b.desc, " ") }

// family matches IPv4 (4) or IPv6 (6) packets.
func (b *rb) family(v uint8) *rb {
	nf := byte(unix.NFPROTO_IPV4)
	if v == 6 {
		nf = unix.NFPROTO_IPV6
	}
	return b.add(fmt.Sprintf("nfproto ipv%d", v),
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nf}})
}

func (b *rb) l4proto(p uint8, neq bool) *rb {
	op, d := expr.CmpOpEq, "=="
	if neq {
		op, d = expr.CmpOpNeq, "!="
	}
	return b.add(fmt.Sprintf("l4proto %s %d", d, p),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: []byte{p}})
}

// addrOffset is the offset and length of the source or destination
// address in the network header.
func addrOffset(v uint8, src bool) (uint32, uint32) {
	switch {
	case v == 4 && src:
		return 12, 4
	case v == 4:
		return 16, 4
	case src:
		return 8, 16
	}
	return 24, 16
}

func sideName(src bool) string {
	if src {
		return "saddr"
	}
	return "daddr"
}

// inSet matches the source or destination address against a set.
func (b *rb) inSet(v uint8, src bool, set string, invert bool) *rb {
	off, n := addrOffset(v, src)
	op := "@"
	if invert {
		op = "!= @"
	}
	return b.add(fmt.Sprintf("ip%d %s %s%s", v, sideName(src), op, set),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: reg1, SetName: set, Invert: invert})
}

// portOffset is the offset of the source or destination port in the
// transport header (TCP, UDP and SCTP agree).
func portOffset(src bool) uint32 {
	if src {
		return 0
	}
	return 2
}

// port matches the port against one range (invert: outside it).
func (b *rb) port(src bool, r dataplane.PortRange, invert bool) *rb {
	which := "dport"
	if src {
		which = "sport"
	}
	load := &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: portOffset(src), Len: 2}
	if r.Min == r.Max {
		op, d := expr.CmpOpEq, "=="
		if invert {
			op, d = expr.CmpOpNeq, "!="
		}
		return b.add(fmt.Sprintf("th %s %s %d", which, d, r.Min), load, &expr.Cmp{Op: op, Register: reg1, Data: be16(r.Min)})
	}
	op, d := expr.CmpOpEq, ""
	if invert {
		op, d = expr.CmpOpNeq, "!= "
	}
	return b.add(fmt.Sprintf("th %s %s%d-%d", which, d, r.Min, r.Max), load,
		&expr.Range{Op: op, Register: reg1, FromData: be16(r.Min), ToData: be16(r.Max)})
}

// inNet matches the source or destination address inside a prefix of
// family v (the caller matched the family).
func (b *rb) inNet(v uint8, src bool, p netip.Prefix) *rb {
	off, n := addrOffset(v, src)
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return b.add(fmt.Sprintf("ip%d %s %s", v, sideName(src), p),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: p.Masked().Addr().AsSlice()})
}

// icmpTypes matches ICMP(v6) types in [lo, hi].
func (b *rb) icmpTypes(lo, hi uint8) *rb {
	return b.add(fmt.Sprintf("icmp type %d-%d", lo, hi),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: []byte{lo}, ToData: []byte{hi}})
}

// portSet matches (address, protocol, port) against a named-port set.
func (b *rb) portSet(v uint8, src bool, set string, invert bool) *rb {
	off, n := addrOffset(v, src)
	addrRegs := n / 4
	op := "@"
	if invert {
		op = "!= @"
	}
	which := "dport"
	if src {
		which = "sport"
	}
	return b.add(fmt.Sprintf("ip%d %s . l4proto . th %s %s%s", v, sideName(src), which, op, set),
		&expr.Payload{DestRegister: reg32_00, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_00 + addrRegs},
		&expr.Payload{DestRegister: reg32_00 + addrRegs + 1, Base: expr.PayloadBaseTransportHeader, Offset: portOffset(src), Len: 2},
		&expr.Lookup{SourceRegister: reg32_00, SetName: set, Invert: invert})
}

// icmp matches an ICMP type and optional code (invert: not both).
func (b *rb) icmp(m *dataplane.ICMPMatch, invert bool) *rb {
	if m.Code < 0 {
		op, d := expr.CmpOpEq, "=="
		if invert {
			op, d = expr.CmpOpNeq, "!="
		}
		return b.add(fmt.Sprintf("icmp type %s %d", d, m.Type),
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: op, Register: reg1, Data: []byte{m.Type}})
	}
	op, d := expr.CmpOpEq, "=="
	if invert {
		op, d = expr.CmpOpNeq, "!="
	}
	return b.add(fmt.Sprintf("icmp type.code %s %d.%d", d, m.Type, m.Code),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: op, Register: reg1, Data: []byte{m.Type, byte(m.Code)}})
}

// markHas matches packets with (set) or without (!set) a mark bit.
func (b *rb) markHas(bit uint32, set bool) *rb {
	op, d := expr.CmpOpNeq, "!="
	if !set {
		op, d = expr.CmpOpEq, "=="
	}
	return b.add(fmt.Sprintf("mark & %#x %s 0", bit, d),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(bit), Xor: ne32(0)},
		&expr.Cmp{Op: op, Register: reg1, Data: ne32(0)})
}

// setMark sets (or clears) mark bits, keeping the others.
func (b *rb) setMark(bit uint32, on bool) *rb {
	xor, d := ne32(bit), "|"
	if !on {
		xor, d = ne32(0), "& ~"
	}
	return b.add(fmt.Sprintf("mark set mark %s %#x", d, bit),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(^bit), Xor: xor},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1})
}

// ctState matches connection-tracking states (a bit mask of
// expr.CtStateBit*).
func (b *rb) ctState(bits uint32) *rb {
	return b.add(fmt.Sprintf("ct state & %#x != 0", bits),
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(bits), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)})
}

// iface loads the input (in) or output interface name.
func ifaceKey(in bool) expr.MetaKey {
	if in {
		return expr.MetaKeyIIFNAME
	}
	return expr.MetaKeyOIFNAME
}

func ifaceWord(in bool) string {
	if in {
		return "iifname"
	}
	return "oifname"
}

// ifaceIs matches one interface name (or, neq, every other).
func (b *rb) ifaceIs(in bool, name string, neq bool) *rb {
	op, d := expr.CmpOpEq, "=="
	if neq {
		op, d = expr.CmpOpNeq, "!="
	}
	return b.add(fmt.Sprintf("%s %s %q", ifaceWord(in), d, name),
		&expr.Meta{Key: ifaceKey(in), Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: ifname(name)})
}

// workloadShaped matches interface names shaped like a workload's host
// interface: the prefix, then hex digits up to the full length
// (dataplane.WorkloadIfaceName). The range check keeps out names with a
// '.' after the prefix (weft.vxlan, weft.wg); the length check keeps out
// shorter names.
func (b *rb) workloadShaped(in bool, prefix string, want bool) *rb {
	lo := ifname(prefix + strings.Repeat("0", 15-len(prefix)))
	hi := ifname(prefix + strings.Repeat("f", 15-len(prefix)))
	last := len(prefix) + 11 - 1 // index of the last character
	mask := make([]byte, 16)
	mask[last] = 0xff
	if want {
		return b.add(fmt.Sprintf("%s %s* (workload-shaped)", ifaceWord(in), prefix),
			&expr.Meta{Key: ifaceKey(in), Register: reg1},
			&expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: lo, ToData: hi},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 16)})
	}
	panic("workloadShaped: only the positive match is used")
}

// ifaceMap dispatches by interface name through a verdict map.
func (b *rb) ifaceMap(in bool, set string) *rb {
	return b.add(fmt.Sprintf("%s vmap @%s", ifaceWord(in), set),
		&expr.Meta{Key: ifaceKey(in), Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set, IsDestRegSet: true, DestRegister: 0})
}

func (b *rb) counter() *rb { return b.add("counter", &expr.Counter{}) }

func (b *rb) log(prefix string) *rb {
	if len(prefix) > 127 {
		prefix = prefix[:127]
	}
	return b.add(fmt.Sprintf("log prefix %q", prefix),
		&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(prefix)})
}

func (b *rb) masquerade() *rb {
	return b.add("masquerade fully-random", &expr.Masq{FullyRandom: true})
}

// snat translates the IPv4 source to addr, into the port range min-max
// when min is set (TCP and UDP only: the caller matches the protocol).
func (b *rb) snat(addr netip.Addr, minPort, maxPort uint16) *rb {
	nat := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, FullyRandom: true}
	es := []expr.Any{&expr.Immediate{Register: 1, Data: addr.AsSlice()}}
	d := "snat ip to " + addr.String()
	if minPort != 0 {
		es = append(es,
			&expr.Immediate{Register: 2, Data: be16(minPort)},
			&expr.Immediate{Register: 3, Data: be16(maxPort)})
		nat.RegProtoMin, nat.RegProtoMax, nat.Specified = 2, 3, true
		d += fmt.Sprintf(":%d-%d", minPort, maxPort)
	}
	return b.add(d+" fully-random", append(es, nat)...)
}

func (b *rb) notrack() *rb { return b.add("notrack", &expr.Notrack{}) }

func (b *rb) verdict(k expr.VerdictKind, chain string) *rb {
	var d string
	switch k {
	case expr.VerdictAccept:
		d = "accept"
	case expr.VerdictDrop:
		d = "drop"
	case expr.VerdictReturn:
		d = "return"
	case expr.VerdictJump:
		d = "jump " + chain
	case expr.VerdictGoto:
		d = "goto " + chain
	}
	return b.add(d, &expr.Verdict{Kind: k, Chain: chain})
}

func (b *rb) accept() *rb            { return b.verdict(expr.VerdictAccept, "") }
func (b *rb) drop() *rb              { return b.verdict(expr.VerdictDrop, "") }
func (b *rb) ret() *rb               { return b.verdict(expr.VerdictReturn, "") }
func (b *rb) jump(c string) *rb      { return b.verdict(expr.VerdictJump, c) }
func (b *rb) gotoChain(c string) *rb { return b.verdict(expr.VerdictGoto, c) }

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

// ne32 is a 32-bit value in host byte order (marks and ct state are
// compared in host order).
func ne32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// ifname is an interface name as the kernel compares it: 16 bytes,
// zero-padded.
func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}
