package testbed

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"regexp"
)

// Workload is a network namespace standing for a container or VM on a host.
// The test bed only creates it (loopback up); weft attaches it
// (`weft workload add NAME --netns PATH`), or AttachVeth does so by hand.
type Workload struct {
	ns   *Netns
	host *Host
	name string
}

var workloadNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// AddWorkload creates the namespace of workload name on host h; it fails the
// test on error. Its path is /run/netns/wtb-<id>-<host>-<name>.
func (s *Site) AddWorkload(h *Host, name string) *Workload {
	s.t.Helper()
	if !workloadNameRE.MatchString(name) {
		s.t.Fatalf("testbed: bad workload name %q (want %s)", name, workloadNameRE)
	}
	w := &Workload{
		ns:   newNetns(s, Prefix+s.id+"-"+h.name+"-"+name, h.name+"/"+name),
		host: h,
		name: name,
	}
	s.mu.Lock()
	for _, o := range s.workloads {
		if o.ns.name == w.ns.name {
			s.mu.Unlock()
			s.t.Fatalf("testbed: workload %s already exists", w.ns.label)
		}
	}
	s.workloads = append(s.workloads, w)
	s.mu.Unlock()
	if err := s.addNetns(w.ns); err != nil {
		s.t.Fatalf("testbed: add workload %s: %v", w.ns.label, err)
	}
	if err := ipBatch(w.ns.name, []string{"link set lo up"}); err != nil {
		s.t.Fatalf("testbed: add workload %s: %v", w.ns.label, err)
	}
	return w
}

// Netns returns the workload's network namespace.
func (w *Workload) Netns() *Netns { return w.ns }

// Name is the workload's name as given to AddWorkload.
func (w *Workload) Name() string { return w.name }

// Host is the host the workload lives on.
func (w *Workload) Host() *Host { return w.host }

// Path is the namespace's path, for `weft workload add NAME --netns PATH`.
func (w *Workload) Path() string { return w.ns.Path() }

// Exec runs argv inside the workload's namespace.
func (w *Workload) Exec(argv ...string) (string, error) { return w.ns.Exec(argv...) }

// HostVeth is the name AttachVeth gives the host side of the workload's
// veth: "wtb" and 8 hex digits of a hash of the namespace name.
func (w *Workload) HostVeth() string {
	h := fnv.New32a()
	h.Write([]byte(w.ns.name))
	return fmt.Sprintf("wtb%08x", h.Sum32())
}

// AttachVeth wires the workload to its host without weft, the way Calico
// does: a veth with eth0 in the workload holding addr (a single IPv4
// address), a default route via 169.254.1.1 on eth0, and on the host side
// proxy ARP and a /32 route to addr. Routing between hosts is not set up.
func (w *Workload) AttachVeth(addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return fmt.Errorf("testbed: AttachVeth wants one IPv4 address, got %q", addr)
	}
	hv := w.HostVeth()
	if err := ipBatch(w.host.ns.name, []string{
		"link add " + hv + " type veth peer name eth0 netns " + w.ns.name,
		"link set " + hv + " up",
	}); err != nil {
		return fmt.Errorf("testbed: attach %s: %w", w.ns.label, err)
	}
	if err := w.host.ns.SetSysctl("net/ipv4/conf/"+hv+"/proxy_arp", "1"); err != nil {
		return err
	}
	if err := ipBatch(w.host.ns.name, []string{"route add " + addr + "/32 dev " + hv}); err != nil {
		return fmt.Errorf("testbed: attach %s: %w", w.ns.label, err)
	}
	if err := ipBatch(w.ns.name, []string{
		"addr add " + addr + "/32 dev eth0",
		"link set eth0 up",
		"route add 169.254.1.1 dev eth0 scope link",
		"route add default via 169.254.1.1 dev eth0",
	}); err != nil {
		return fmt.Errorf("testbed: attach %s: %w", w.ns.label, err)
	}
	return nil
}
