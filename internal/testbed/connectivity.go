package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Probe is how a Check tests reachability: one ping, or a TCP handshake.
type Probe struct {
	tcpPort int // 0 means ping
}

// Ping probes with ICMP echo requests sent from a raw socket inside the
// source namespace (no external tool), resent every 200 ms, waiting at most
// 1 s for an answer.
func Ping() Probe { return Probe{} }

// TCP probes with a TCP handshake to port, made from inside the source
// namespace (no external tool). Serve a target with Netns.ServeTCP.
func TCP(port int) Probe { return Probe{tcpPort: port} }

func (p Probe) String() string {
	if p.tcpPort == 0 {
		return "ping"
	}
	return "tcp:" + strconv.Itoa(p.tcpPort)
}

// probeTimeout bounds one probe; a round of checks takes about this long
// when some are expected to fail.
const probeTimeout = time.Second

// run performs the probe once and returns nil when the target answered.
func (p Probe) run(ctx context.Context, from *Netns, to string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout+500*time.Millisecond)
	defer cancel()
	if p.tcpPort == 0 {
		addr, err := netip.ParseAddr(to)
		if err != nil {
			return fmt.Errorf("ping %q: %w", to, err)
		}
		pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
		defer pcancel()
		if r := from.ns.Ping(pctx, []netip.Addr{addr})[addr]; !r.OK {
			return fmt.Errorf("ping %s: %s", to, r.Err)
		}
		return nil
	}
	dctx, dcancel := context.WithTimeout(ctx, probeTimeout)
	defer dcancel()
	c, err := from.DialContext(dctx, "tcp", net.JoinHostPort(to, strconv.Itoa(p.tcpPort)))
	if err != nil {
		return err
	}
	return c.Close()
}

// Check is one expectation: from a namespace, the address To is (or is not)
// reachable by Probe.
type Check struct {
	From      Namespace
	To        string
	Probe     Probe
	Reachable bool
}

// Reach expects to to be reachable from from.
func Reach(from Namespace, to string, p Probe) Check {
	return Check{From: from, To: to, Probe: p, Reachable: true}
}

// NoReach expects to not to be reachable from from.
func NoReach(from Namespace, to string, p Probe) Check {
	return Check{From: from, To: to, Probe: p, Reachable: false}
}

// Mesh returns a check between every ordered pair of distinct hosts, to the
// other's underlay IPv4 address, expecting reachable(from, to).
func Mesh(hosts []*Host, p Probe, reachable func(from, to *Host) bool) []Check {
	var cs []Check
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				cs = append(cs, Check{From: a, To: b.Address(), Probe: p, Reachable: reachable(a, b)})
			}
		}
	}
	return cs
}

// Outcome is what a check saw in the last round.
type Outcome struct {
	Check
	Seen   bool   // the probe succeeded
	Detail string // why it failed, when it did
}

// ConnectivityError reports a matrix that never matched: every check with
// what was expected and what the last round saw.
type ConnectivityError struct {
	Outcomes []Outcome
	Rounds   int
	Elapsed  time.Duration
}

func (e *ConnectivityError) Error() string {
	var b strings.Builder
	bad := 0
	for _, o := range e.Outcomes {
		if o.Seen != o.Reachable {
			bad++
		}
	}
	fmt.Fprintf(&b, "connectivity: %d of %d checks wrong after %s (%d rounds); last round:\n",
		bad, len(e.Outcomes), e.Elapsed.Round(time.Millisecond), e.Rounds)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tFROM\tTO\tPROBE\tEXPECT\tSEEN\tDETAIL")
	for _, o := range e.Outcomes {
		mark := ""
		if o.Seen != o.Reachable {
			mark = "✗"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, o.From.Netns().Label(), o.To, o.Probe,
			yesNo(o.Reachable), yesNo(o.Seen), o.Detail)
	}
	tw.Flush()
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "reach"
	}
	return "no"
}

// maxParallelProbes bounds the probes of one round running at once.
const maxParallelProbes = 16

// VerifyConnectivity probes every check, all in one round, and repeats
// rounds until one matches every expectation (nil) or ctx ends (a
// *ConnectivityError with the last round's full matrix).
func VerifyConnectivity(ctx context.Context, checks []Check) error {
	start := time.Now()
	rounds := 0
	for {
		rounds++
		outcomes := probeRound(ctx, checks)
		ok := true
		for _, o := range outcomes {
			if o.Seen != o.Reachable {
				ok = false
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return &ConnectivityError{Outcomes: outcomes, Rounds: rounds, Elapsed: time.Since(start)}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func probeRound(ctx context.Context, checks []Check) []Outcome {
	outcomes := make([]Outcome, len(checks))
	sem := make(chan struct{}, maxParallelProbes)
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			err := c.Probe.run(ctx, c.From.Netns(), c.To)
			outcomes[i] = Outcome{Check: c, Seen: err == nil}
			if err != nil {
				outcomes[i].Detail = oneLine(err.Error())
			}
		}()
	}
	wg.Wait()
	return outcomes
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// Expect retries checks until they all hold in one round, for up to
// Options.ExpectTimeout, and fails the test with the full matrix otherwise.
func (s *Site) Expect(checks ...Check) {
	s.t.Helper()
	s.ExpectWithin(s.opts.ExpectTimeout, checks...)
}

// ExpectWithin is Expect with its own deadline.
func (s *Site) ExpectWithin(d time.Duration, checks ...Check) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := VerifyConnectivity(ctx, checks); err != nil {
		s.t.Fatalf("%v", err)
	}
}
