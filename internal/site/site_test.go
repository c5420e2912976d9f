package site

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/testtier"
)

func TestSpecValidation(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	good := Spec{Prefix: "x-", Subnets: []Subnet{{V4: p("10.1.0.0/24")}}, Hosts: []HostSpec{{Name: "h1", Addr: a("10.1.0.11")}}}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Spec){
		"no subnet":        func(s *Spec) { s.Subnets = nil },
		"unmasked":         func(s *Spec) { s.Subnets[0].V4 = p("10.1.0.1/24") },
		"v6 as v4":         func(s *Spec) { s.Subnets[0].V4 = p("fd00::/64") },
		"duplicate host":   func(s *Spec) { s.Hosts = append(s.Hosts, s.Hosts[0]) },
		"host is router":   func(s *Spec) { s.Hosts[0].Name = DefaultRouter },
		"router's address": func(s *Spec) { s.Hosts[0].Addr = a("10.1.0.1") },
		"outside subnet":   func(s *Spec) { s.Hosts[0].Addr = a("10.2.0.11") },
		"no such subnet":   func(s *Spec) { s.Hosts[0].Subnet = 1 },
		"v6 without v6":    func(s *Spec) { s.Hosts[0].Addr6 = a("fd00::11") },
	} {
		s := good
		s.Subnets = slices.Clone(good.Subnets)
		s.Hosts = slices.Clone(good.Hosts)
		mut(&s)
		if err := s.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := strings.Join(good.Namespaces(), " "); got != "x-router x-h1" {
		t.Errorf("namespaces %s", got)
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.0/24": "10.1.2.255", "10.1.0.0/16": "10.1.255.255", "10.1.2.8/29": "10.1.2.15"} {
		if got := lastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

// A site of two subnets joined by the router: every host reaches every
// other and the router, over IPv6 too where the subnet has it; hosts keep
// private /run/wireguard mounts; cutting an uplink isolates one host; Close
// leaves nothing.
func TestKernelTwoSubnetSite(t *testing.T) {
	testtier.Kernel(t)
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	prefix := fmt.Sprintf("wst%d-", rand.IntN(1_000_000))
	var recorded []string
	spec := Spec{
		Prefix: prefix,
		Subnets: []Subnet{
			{V4: p("10.201.1.0/24"), V6: p("fd77:1:1:1::/64")},
			{V4: p("10.201.2.0/24"), V6: p("fd77:1:1:2::/64")},
		},
		Hosts: []HostSpec{
			{Name: "h1", Subnet: 0, Addr: a("10.201.1.11"), Addr6: a("fd77:1:1:1::11")},
			{Name: "h2", Subnet: 0, Addr: a("10.201.1.12")},
			{Name: "h3", Subnet: 1, Addr: a("10.201.2.13"), Addr6: a("fd77:1:1:2::13")},
		},
		Record: func(name string) error { recorded = append(recorded, name); return nil },
	}
	s, err := Build(spec)
	if s != nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.AddWorkload(s.Host("h1"), "web")
	if err != nil {
		t.Fatal(err)
	}
	if want := append(spec.Namespaces(), prefix+"h1-web"); !slices.Equal(recorded, want) || !slices.Equal(s.Created(), want) {
		t.Errorf("recorded %v, created %v, want %v", recorded, s.Created(), want)
	}
	if w.Label() != "h1/web" || w.Path() != "/run/netns/"+prefix+"h1-web" {
		t.Errorf("workload %s at %s", w.Label(), w.Path())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := []netip.Addr{a("10.201.1.1"), a("10.201.2.1"), a("10.201.1.11"), a("10.201.1.12"), a("10.201.2.13"), a("fd77:1:1:1::11"), a("fd77:1:1:2::13")}
	for _, h := range []*Host{s.Host("h1"), s.Host("h3")} {
		res := h.Ping(ctx, all)
		for _, to := range all {
			if !res[to].OK {
				t.Errorf("%s -> %s: %+v", h.Name(), to, res[to])
			}
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 600*time.Millisecond)
	if res := w.Ping(short, []netip.Addr{a("10.201.1.11")}); res[a("10.201.1.11")].OK {
		t.Error("an unplumbed workload reached its host")
	}
	cancelShort()

	// Hosts see their own devices in /sys, and only their own file in their
	// private /run/wireguard.
	for _, h := range s.Hosts() {
		if _, err := h.Output(ctx, "", "sh", "-c", "touch "+WireGuardDir+"/"+h.Name()+".sock"); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range s.Hosts() {
		out, err := h.Output(ctx, "", "sh", "-c", "ls -A "+WireGuardDir+"; ls /sys/class/net")
		if want := h.Name() + ".sock\neth0\nlo\n"; err != nil || out != want {
			t.Errorf("%s: %q, %v, want %q", h.Name(), out, err, want)
		}
	}
	if _, err := os.Stat(WireGuardDir + "/h1.sock"); err == nil {
		t.Error("a host's private file shows outside")
	}

	// A process launched in a host runs there until the site closes.
	sleeper := exec.Command("sleep", "60")
	if err := s.Host("h2").Launch(sleeper); err != nil {
		t.Fatal(err)
	}
	proc := Watch(sleeper)
	h2ino, _ := netns.Inode(s.Host("h2").Path())
	if !slices.Contains(netns.ProcessesIn(map[uint64]bool{h2ino: true}), proc.Pid()) {
		t.Error("the launched process is not in h2's namespace")
	}

	if err := s.Host("h2").SetUplink(false); err != nil {
		t.Fatal(err)
	}
	short, cancelShort = context.WithTimeout(ctx, 600*time.Millisecond)
	if res := s.Host("h1").Ping(short, []netip.Addr{a("10.201.1.12")}); res[a("10.201.1.12")].OK {
		t.Error("h2 still reachable with its uplink cut")
	}
	cancelShort()
	if err := s.Host("h2").SetUplink(true); err != nil {
		t.Fatal(err)
	}
	if err := s.Host("h3").SetAddress(a("10.201.2.50")); err != nil {
		t.Fatal(err)
	}
	if err := s.Host("h3").SetAddress(a("10.201.1.50")); err == nil {
		t.Error("an address outside the host's subnet was accepted")
	}
	if res := s.Host("h1").Ping(ctx, []netip.Addr{a("10.201.2.50"), a("10.201.1.12")}); !res[a("10.201.2.50")].OK || !res[a("10.201.1.12")].OK {
		t.Errorf("after SetUplink(true) and SetAddress: %+v", res)
	}

	inodes := s.Inodes()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.Done():
	case <-time.After(5 * time.Second):
		t.Error("the launched process survived Close")
	}
	if left, _ := netns.List(prefix); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if pids := netns.ProcessesIn(inodes); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
}
