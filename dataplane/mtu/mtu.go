// Package mtu reads what underlay MTU detection needs from the kernel (the
// interfaces, their MTUs and which holds a node address) and watches it
// for changes; it never writes. The choice of the underlay MTU
// ([dataplane.SelectUnderlay]) and the arithmetic that derives workload and
// tunnel MTUs from it are pure and live in package dataplane, where the
// calculation uses them: the agent feeds the links it observes into the
// calculation, which applies FelixConfiguration's mtuIfacePattern.
package mtu

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// Fallback is the underlay MTU assumed when no interface qualifies, as
// Calico does.
const Fallback = dataplane.FallbackUnderlayMTU

// PhysicalPattern matches interface names that look physical: Calico's
// default mtuIfacePattern.
var PhysicalPattern = regexp.MustCompile(dataplane.DefaultMTUIfacePattern)

// Underlay is a detected underlay MTU and where it came from.
type Underlay = dataplane.Underlay

// Config configures detection.
type Config struct {
	// NetNS is the namespace to look in; "" is the current one.
	NetNS string
	// Pattern selects the interfaces; nil is weft's default (the interface
	// holding a node address, else PhysicalPattern), see
	// [dataplane.SelectUnderlay].
	Pattern *regexp.Regexp
	// Ignore leaves interfaces out of the listing (weft's own: workload
	// veths and tunnel devices, whose MTUs weft derives from the
	// underlay's); nil ignores none.
	Ignore func(name string) bool
}

// Detect finds the underlay MTU now; see [dataplane.SelectUnderlay].
func Detect(cfg Config, nodeAddrs ...netip.Addr) (Underlay, error) {
	links, err := Links(cfg, nodeAddrs...)
	if err != nil {
		return Underlay{}, err
	}
	return dataplane.SelectUnderlay(links, cfg.Pattern)
}

// Links lists the namespace's interfaces (except the ignored ones), sorted
// by name.
func Links(cfg Config, nodeAddrs ...netip.Addr) ([]dataplane.Link, error) {
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := ns.Netlink()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return list(h, cfg, nodeAddrs)
}

func list(h *netlink.Handle, cfg Config, nodeAddrs []netip.Addr) ([]dataplane.Link, error) {
	links, err := nlutil.Dump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	holds := map[int]bool{}
	if len(nodeAddrs) > 0 {
		addrs, err := nlutil.Dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
		if err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			if slices.Contains(nodeAddrs, kroute.Addr(a.IP)) {
				holds[a.LinkIndex] = true
			}
		}
	}
	out := make([]dataplane.Link, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		if cfg.Ignore != nil && cfg.Ignore(a.Name) {
			continue
		}
		out = append(out, dataplane.Link{
			Name: a.Name, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, Loopback: a.Flags&net.FlagLoopback != 0,
			HoldsNodeAddr: holds[a.Index],
		})
	}
	slices.SortFunc(out, func(x, y dataplane.Link) int {
		switch {
		case x.Name < y.Name:
			return -1
		case x.Name > y.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// Watch reports the namespace's links (as [Links] lists them) whenever
// they change, starting with the current ones, until ctx ends. It re-reads
// the links after every burst of link events (an MTU set, an interface
// added, set up or down) and calls report only when the listing differs
// from the last one reported. A failed subscription is retried after a
// second (the links are read again then, so nothing is missed for long).
func Watch(ctx context.Context, cfg Config, nodeAddrs []netip.Addr, report func([]dataplane.Link)) error {
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := ns.Netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	var last []dataplane.Link
	reported := false
	relist := func() {
		links, err := list(h, cfg, nodeAddrs)
		if err != nil {
			return // the next event or the retry reads again
		}
		if !reported || !slices.Equal(links, last) {
			last, reported = links, true
			report(links)
		}
	}
	changed := make(chan struct{}, 1)
	for ctx.Err() == nil {
		relist()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- watch.Links(wctx, ns.Handle(), func(u netlink.LinkUpdate) {
				if cfg.Ignore != nil && cfg.Ignore(u.Link.Attrs().Name) {
					return
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			})
		}()
		ended := false
		for !ended && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-changed:
				relist()
			case <-done:
				ended = true
			}
		}
		cancel()
		if !ended {
			<-done
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}
