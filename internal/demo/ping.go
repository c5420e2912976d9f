package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// resendInterval is how often an unanswered target gets another echo
// request while routes converge.
const resendInterval = 200 * time.Millisecond

// endpoint is a workload as the ping matrix sees it.
type endpoint struct {
	Name  string
	Netns string
	Addr  netip.Addr
}

// pingResult is the outcome of one ordered pair.
type pingResult struct {
	OK  bool
	Err string // why not, when !OK
}

// matrix holds the result of every ordered pair of distinct endpoints.
type matrix struct {
	Endpoints []endpoint
	Results   map[[2]int]pingResult // [from, to] indexes into Endpoints
}

// pingAll sends ICMP echo requests from inside every endpoint's namespace
// to every other endpoint, resending until each pair has answered or ctx
// ends, and returns the matrix.
func pingAll(ctx context.Context, eps []endpoint) matrix {
	m := matrix{Endpoints: eps, Results: map[[2]int]pingResult{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var targets []netip.Addr
			for j, ep := range eps {
				if j != i {
					targets = append(targets, ep.Addr)
				}
			}
			res := pingFrom(ctx, eps[i].Netns, (os.Getpid()+i)&0xffff, targets)
			mu.Lock()
			defer mu.Unlock()
			for j, ep := range eps {
				if j != i {
					m.Results[[2]int{i, j}] = res[ep.Addr]
				}
			}
		}()
	}
	wg.Wait()
	return m
}

// pingFrom pings every target from a raw ICMP socket opened inside the
// namespace (the socket stays there whichever thread uses it).
func pingFrom(ctx context.Context, ns string, id int, targets []netip.Addr) map[netip.Addr]pingResult {
	results := map[netip.Addr]pingResult{}
	fail := func(err error) map[netip.Addr]pingResult {
		for _, t := range targets {
			results[t] = pingResult{Err: err.Error()}
		}
		return results
	}
	var conn *icmp.PacketConn
	err := onThreadIn(ns, func() error {
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		conn = c
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("open an ICMP socket: %w", err))
	}
	defer conn.Close()

	type sent struct{ to netip.Addr }
	var (
		inflight = map[int]sent{} // by sequence number
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
				msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("weft demo")}}
				b, _ := msg.Marshal(nil)
				if _, err := conn.WriteTo(b, &net.IPAddr{IP: t.AsSlice()}); err != nil {
					lastErr[t] = err.Error()
					continue
				}
				inflight[seq] = sent{to: t}
			}
			nextSend = now.Add(resendInterval)
		}
		deadline := nextSend
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = conn.SetReadDeadline(deadline)
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fail(fmt.Errorf("read: %w", err))
		}
		msg, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || msg.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := msg.Body.(*icmp.Echo)
		if !ok || echo.ID != id {
			continue
		}
		s, ok := inflight[echo.Seq]
		from, _ := netip.ParseAddr(peer.String())
		if !ok || from != s.to {
			continue
		}
		results[s.to] = pingResult{OK: true}
	}
	for _, t := range targets {
		if _, done := results[t]; !done {
			why := "no answer"
			if e := lastErr[t]; e != "" {
				why = e
			}
			results[t] = pingResult{Err: why}
		}
	}
	return results
}

// Reachable counts the pairs that answered, out of all pairs.
func (m matrix) Reachable() (ok, total int) {
	for _, r := range m.Results {
		total++
		if r.OK {
			ok++
		}
	}
	return ok, total
}

// Summary is the one-line verdict, naming the pairs that failed.
func (m matrix) Summary() string {
	ok, total := m.Reachable()
	s := fmt.Sprintf("%d/%d pairs reachable", ok, total)
	if ok == total {
		return s
	}
	var failed []string
	for i, from := range m.Endpoints {
		for j, to := range m.Endpoints {
			if r, found := m.Results[[2]int{i, j}]; found && !r.OK {
				failed = append(failed, fmt.Sprintf("%s -> %s (%s): %s", from.Name, to.Name, to.Addr, r.Err))
			}
		}
	}
	return s + "; not reachable: " + strings.Join(failed, ", ")
}

// Table draws the matrix: one row per source, one column per destination,
// "ok" or "FAIL" in each cell.
func (m matrix) Table() string {
	width := len("from \\ to")
	for _, ep := range m.Endpoints {
		width = max(width, len(ep.Name))
	}
	col := width + 2
	var b strings.Builder
	row := func(cells ...string) {
		var line strings.Builder
		for _, c := range cells {
			fmt.Fprintf(&line, "%-*s", col, c)
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	header := []string{"from \\ to"}
	for _, ep := range m.Endpoints {
		header = append(header, ep.Name)
	}
	row(header...)
	for i, from := range m.Endpoints {
		cells := []string{from.Name}
		for j := range m.Endpoints {
			cell := "-"
			if r, found := m.Results[[2]int{i, j}]; found {
				cell = "FAIL"
				if r.OK {
					cell = "ok"
				}
			}
			cells = append(cells, cell)
		}
		row(cells...)
	}
	return b.String()
}
