package dataplane

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDesiredNewSectionsValidateAndCompare(t *testing.T) {
	ipip := &IPIPDevice{TunnelAddr: netip.MustParseAddr("10.244.0.1"), Source: netip.MustParseAddr("192.0.2.1")}
	base := Desired{IPIP: ipip, Loop: LoopSettings{ResyncPeriod: 30 * time.Second, LogLevel: "debug"},
		VXLAN: &VXLANDevice{MAC: VXLANMAC("n1"), Source: netip.MustParseAddr("192.0.2.1"), VNI: 4097, Port: 4790},
		NAT:   NATConfig{SNATAddress: netip.MustParseAddr("192.0.2.9"), PortMin: 32768, PortMax: 60999}}
	if err := base.Validate(); err != nil {
		t.Fatalf("valid state refused: %v", err)
	}
	for name, change := range map[string]func(d *Desired){
		"ipip address":  func(d *Desired) { c := *d.IPIP; c.TunnelAddr = netip.MustParseAddr("10.244.0.2"); d.IPIP = &c },
		"ipip removed":  func(d *Desired) { d.IPIP = nil },
		"resync period": func(d *Desired) { d.Loop.ResyncPeriod = time.Minute },
		"log level":     func(d *Desired) { d.Loop.LogLevel = "" },
		"vxlan vni":     func(d *Desired) { c := *d.VXLAN; c.VNI = 4096; d.VXLAN = &c },
		"vxlan port":    func(d *Desired) { c := *d.VXLAN; c.Port = 4789; d.VXLAN = &c },
		"snat address":  func(d *Desired) { d.NAT.SNATAddress = netip.Addr{} },
		"port range":    func(d *Desired) { d.NAT.PortMax = 61000 },
	} {
		d := base
		change(&d)
		if d.Equal(&base) || base.Equal(&d) {
			t.Errorf("%s: a changed state compares equal", name)
		}
	}
	for name, change := range map[string]func(d *Desired){
		"ipip v6 source": func(d *Desired) {
			d.IPIP = &IPIPDevice{TunnelAddr: ipip.TunnelAddr, Source: netip.MustParseAddr("fd00::1")}
		},
		"ipip no address":          func(d *Desired) { d.IPIP = &IPIPDevice{Source: ipip.Source} },
		"ipip MTU":                 func(d *Desired) { d.IPIP = &IPIPDevice{TunnelAddr: ipip.TunnelAddr, Source: ipip.Source, MTU: 40} },
		"resync too long":          func(d *Desired) { d.Loop.ResyncPeriod = 2 * time.Minute },
		"bad level":                func(d *Desired) { d.Loop.LogLevel = "verbose" },
		"vni":                      func(d *Desired) { c := *d.VXLAN; c.VNI = 1 << 24; d.VXLAN = &c },
		"port":                     func(d *Desired) { c := *d.VXLAN; c.Port = 70000; d.VXLAN = &c },
		"snat v6":                  func(d *Desired) { d.NAT.SNATAddress = netip.MustParseAddr("fd00::1") },
		"port range reverse":       func(d *Desired) { d.NAT.PortMin, d.NAT.PortMax = 2000, 1000 },
		"ports without an address": func(d *Desired) { d.NAT.SNATAddress = netip.Addr{} },
		"half a port range":        func(d *Desired) { d.NAT.PortMin, d.NAT.PortMax = 0, 1000 },
	} {
		d := base
		change(&d)
		if err := d.Validate(); err == nil {
			t.Errorf("%s: invalid state accepted", name)
		}
	}
}

func TestLevelHandlerFollowsItsLevel(t *testing.T) {
	var buf bytes.Buffer
	base := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})
	var level slog.LevelVar
	log := slog.New(LevelHandler(base, &level)).With("component", "dataplane")
	log.Debug("hidden")
	level.Set(slog.LevelDebug)
	log.Debug("shown below the agent's level")
	level.Set(slog.LevelError)
	log.Warn("hidden too")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "shown below") || !strings.Contains(out, "component=dataplane") {
		t.Errorf("log output:\n%s", out)
	}
}
