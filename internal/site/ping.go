package site

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// resendInterval is how often an unanswered target gets another echo
// request.
const resendInterval = 200 * time.Millisecond

// PingResult is what one target did.
type PingResult struct {
	OK  bool
	Err string // why not, when !OK
}

// Ping sends ICMP echo requests from a raw socket opened inside the
// namespace (the socket stays there whichever thread uses it) to every
// target, IPv4 or IPv6, resending every 200 ms until each has answered or
// ctx ends. No external tool is involved.
func (n *Namespace) Ping(ctx context.Context, targets []netip.Addr) map[netip.Addr]PingResult {
	var v4, v6 []netip.Addr
	for _, t := range targets {
		if t.Unmap().Is4() {
			v4 = append(v4, t)
		} else {
			v6 = append(v6, t)
		}
	}
	results := map[netip.Addr]PingResult{}
	r6 := make(chan map[netip.Addr]PingResult, 1)
	go func() { r6 <- n.pingFamily(ctx, v6, false) }()
	for t, r := range n.pingFamily(ctx, v4, true) {
		results[t] = r
	}
	for t, r := range <-r6 {
		results[t] = r
	}
	return results
}

func (n *Namespace) pingFamily(ctx context.Context, targets []netip.Addr, v4 bool) map[netip.Addr]PingResult {
	results := map[netip.Addr]PingResult{}
	if len(targets) == 0 {
		return results
	}
	fail := func(err error) map[netip.Addr]PingResult {
		for _, t := range targets {
			results[t] = PingResult{Err: err.Error()}
		}
		return results
	}
	network, laddr, proto := "ip6:ipv6-icmp", "::", 58
	var echo, reply icmp.Type = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	if v4 {
		network, laddr, proto = "ip4:icmp", "0.0.0.0", 1
		echo, reply = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	}
	var conn *icmp.PacketConn
	err := n.Do(func() error {
		c, err := icmp.ListenPacket(network, laddr)
		conn = c
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("open an ICMP socket in %s: %w", n.label, err))
	}
	defer conn.Close()

	// Every raw ICMP socket of the namespace sees every reply: the random
	// id, the sequence number and the source pick out this one's.
	id := rand.IntN(0xffff) + 1
	var (
		inflight = map[int]netip.Addr{} // by sequence number
		lastErr  = map[netip.Addr]string{}
		seq      int
		nextSend time.Time
		buf      = make([]byte, 1500)
	)
	for len(results) < len(targets) && ctx.Err() == nil {
		if now := time.Now(); !now.Before(nextSend) {
			for _, t := range targets {
				if _, done := results[t]; done {
					continue
				}
				seq = (seq + 1) & 0xffff
				msg := icmp.Message{Type: echo, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("weft site")}}
				// For ICMPv6 the kernel fills in the checksum.
				b, _ := msg.Marshal(nil)
				if _, err := conn.WriteTo(b, &net.IPAddr{IP: t.AsSlice()}); err != nil {
					lastErr[t] = err.Error()
					continue
				}
				inflight[seq] = t
			}
			nextSend = now.Add(resendInterval)
		}
		deadline := nextSend
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = conn.SetReadDeadline(deadline)
		size, peer, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fail(fmt.Errorf("read: %w", err))
		}
		msg, err := icmp.ParseMessage(proto, buf[:size])
		if err != nil || msg.Type != reply {
			continue
		}
		body, ok := msg.Body.(*icmp.Echo)
		if !ok || body.ID != id {
			continue
		}
		to, ok := inflight[body.Seq]
		from, _ := netip.ParseAddr(peer.String())
		if !ok || from.Unmap() != to.Unmap() {
			continue
		}
		results[to] = PingResult{OK: true}
	}
	for _, t := range targets {
		if _, done := results[t]; !done {
			why := "no answer"
			if e := lastErr[t]; e != "" {
				why = e
			}
			results[t] = PingResult{Err: why}
		}
	}
	return results
}
