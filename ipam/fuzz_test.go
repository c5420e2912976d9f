package ipam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"
)

// sim drives a fake store with operations decoded from bytes and keeps a
// model of who holds what, checked against the store after every step.
type sim struct {
	t     testing.TB
	f     *fakeStore
	held  map[string][]string // handle → addresses
	node  map[string]string   // address → node it was assigned for
	trace bytes.Buffer        // every response and error, for determinism
}

func newSim(t testing.TB, cache *blockCache) *sim {
	f := newFakeWith(t, cache)
	addPool(t, f, "v4", "10.0.0.0/27", 29) // 4 blocks of 8
	addPool(t, f, "v6", "fd00::/122", 125) // 8 blocks of 8
	addReservation(t, f, "r", "10.0.0.5", "fd00::8/126")
	return &sim{t: t, f: f, held: map[string][]string{}, node: map[string]string{}}
}

// byteReader hands out the fuzz input, then zeros.
type byteReader struct {
	data []byte
	i    int
}

func (r *byteReader) next() byte {
	if r.i >= len(r.data) {
		return 0
	}
	r.i++
	return r.data[r.i-1]
}

func (s *sim) record(name string, out []byte, err error) {
	fmt.Fprintf(&s.trace, "%s -> %s | %v\n", name, out, err)
}

func (s *sim) step(r *byteReader) {
	op := r.next() % 12
	node := fmt.Sprintf("n%d", r.next()%4)
	handle := fmt.Sprintf("h%d", r.next()%24)
	switch op {
	case 0, 1, 2, 3: // assign v4, v6, dual, v4 again
		req := AssignRequest{Handle: handle, Node: node, Attrs: Attributes{WorkloadEndpoint: "default/" + handle}}
		req.Num4 = map[byte]int{0: 1, 1: 0, 2: 1, 3: 1}[op]
		req.Num6 = map[byte]int{0: 0, 1: 1, 2: 1, 3: 0}[op]
		s.assign(req)
	case 4: // a specific address
		req := AssignRequest{Handle: handle, Node: node, IP4: fmt.Sprintf("10.0.0.%d", r.next()%40)}
		s.assign(req)
	case 5:
		out, err := s.f.command(CmdReleaseHandle, ReleaseHandleRequest{Handle: handle})
		s.record("releaseHandle "+handle, out, err)
		if err == nil {
			s.released(out)
		} else if len(s.held[handle]) > 0 {
			s.t.Fatalf("releaseHandle %s failed while it holds %v: %v", handle, s.held[handle], err)
		}
	case 6: // release one held address, sometimes with a wrong handle
		var all []string
		for _, ips := range s.held {
			all = append(all, ips...)
		}
		slices.Sort(all)
		if len(all) == 0 {
			return
		}
		ip := all[int(r.next())%len(all)]
		req := ReleaseRequest{IP: ip}
		if r.next()%4 == 0 {
			req.Handle = "someone-else"
		}
		out, err := s.f.command(CmdRelease, req)
		s.record("release "+ip, out, err)
		if err == nil {
			s.released(out)
		} else if req.Handle == "" {
			s.t.Fatalf("release of held %s failed: %v", ip, err)
		}
	case 7:
		out, err := s.f.command(CmdReleaseHost, ReleaseHostRequest{Node: node})
		s.record("releaseHost "+node, out, err)
		if err != nil {
			s.t.Fatalf("releaseHost: %v", err)
		}
		var resp ReleaseHostResponse
		_ = json.Unmarshal(out, &resp)
		s.drop(resp.Released)
		for h, ips := range s.held {
			for _, ip := range ips {
				if s.node[ip] == node {
					s.t.Fatalf("releaseHost %s left %s of %s", node, ip, h)
				}
			}
		}
	case 8:
		s.f.advance(time.Duration(r.next()) * 10 * time.Second)
	case 9:
		out, err := s.f.command(CmdGC, GCRequest{GracePeriodSeconds: ptr(int64(r.next()) * 10)})
		s.record("gc", out, err)
		if err != nil {
			s.t.Fatalf("gc: %v", err)
		}
		var resp GCResponse
		_ = json.Unmarshal(out, &resp)
		s.drop(resp.Reclaimed)
	case 10:
		out, err := s.f.command(CmdReclaimEmpty, ReclaimEmptyRequest{GracePeriodSeconds: ptr(int64(r.next()))})
		s.record("reclaim", out, err)
		if err != nil {
			s.t.Fatalf("reclaimEmpty: %v", err)
		}
	case 11:
		req := ConfigureRequest{StrictAffinity: ptr(r.next()%2 == 0), IPCooldownSeconds: ptr(int32(r.next() % 3 * 30))}
		out, err := s.f.command(CmdConfigure, req)
		s.record("configure", out, err)
	}
}

func (s *sim) assign(req AssignRequest) {
	before := slices.Clone(s.held[req.Handle])
	out, err := s.f.command(CmdAssign, req)
	s.record("assign "+req.Handle, out, err)
	if err != nil {
		return
	}
	var resp AssignResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		s.t.Fatal(err)
	}
	for _, a := range resp.Addresses {
		if slices.Contains(before, a.IP) {
			continue // idempotent answer
		}
		for h, ips := range s.held {
			if slices.Contains(ips, a.IP) {
				s.t.Fatalf("%s given to %s while %s holds it", a.IP, req.Handle, h)
			}
		}
		if _, reserved := (reservations{{prefix: mustPrefix("10.0.0.5/32")}, {prefix: mustPrefix("fd00::8/126")}}).reservedBy(netip.MustParseAddr(a.IP)); reserved && req.IP4 == "" {
			s.t.Fatalf("reserved %s handed out automatically", a.IP)
		}
		s.held[req.Handle] = append(s.held[req.Handle], a.IP)
		s.node[a.IP] = req.Node
	}
	// A handle already holding a family gets that address back.
	for _, ip := range before {
		if !slices.ContainsFunc(resp.Addresses, func(a Assignment) bool { return a.IP == ip }) &&
			slices.ContainsFunc(resp.Addresses, func(a Assignment) bool { return a.Family == family(netip.MustParseAddr(ip)) }) {
			s.t.Fatalf("handle %s held %s but got %+v", req.Handle, ip, resp.Addresses)
		}
	}
}

func (s *sim) released(out []byte) {
	var resp ReleaseResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		s.t.Fatal(err)
	}
	s.drop(resp.Released)
}

func (s *sim) drop(rels []Released) {
	for _, r := range rels {
		ips := s.held[r.Handle]
		i := slices.Index(ips, r.IP)
		if i < 0 {
			s.t.Fatalf("released %s of %s, which the model does not have", r.IP, r.Handle)
		}
		s.held[r.Handle] = slices.Delete(ips, i, i+1)
		delete(s.node, r.IP)
		if len(s.held[r.Handle]) == 0 {
			delete(s.held, r.Handle)
		}
	}
}

// verify compares the store with the model and checks every invariant.
func (s *sim) verify() {
	s.t.Helper()
	assertConsistent(s.t, s.f)
	stored := map[string][]string{}
	for _, o := range s.f.List(KindBlock, "") {
		b, p, err := decodeBlock(o.Value)
		if err != nil {
			s.t.Fatal(err)
		}
		for ord := range b.Allocations {
			if a, ok := b.attribute(ord); ok {
				stored[a.Handle] = append(stored[a.Handle], addrAt(p, ord).String())
			}
		}
	}
	norm := func(m map[string][]string) string {
		keys := make([]string, 0, len(m))
		for k, v := range m {
			slices.Sort(v)
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b bytes.Buffer
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%v;", k, m[k])
		}
		return b.String()
	}
	if got, want := norm(stored), norm(s.held); got != want {
		s.t.Fatalf("store and model disagree:\nstore %s\nmodel %s", got, want)
	}
}

// runSim applies the input to two fresh states, one with a block cache and
// one without (a replica that just restarted), verifying after every step,
// and requires identical results and byte-identical states.
func runSim(t testing.TB, data []byte) {
	a, b := newSim(t, newBlockCache()), newSim(t, nil)
	ra, rb := &byteReader{data: data}, &byteReader{data: data}
	for ra.i < len(data) {
		a.step(ra)
		b.step(rb)
		a.verify()
	}
	if !bytes.Equal(a.trace.Bytes(), b.trace.Bytes()) {
		t.Fatalf("responses differ between replicas")
	}
	if !bytes.Equal(a.f.dump(), b.f.dump()) {
		t.Fatalf("states differ between replicas:\n%s\n---\n%s", a.f.dump(), b.f.dump())
	}
}

func TestRandomSequences(t *testing.T) {
	n := 60
	if testing.Short() {
		n = 10
	}
	for seed := range n {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		data := make([]byte, 250)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runSim(t, data) })
	}
}

func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 3, 1, 1, 4, 5, 0, 1, 7, 0, 0, 8, 200, 9, 0, 0})
	f.Add(bytes.Repeat([]byte{2, 1, 3}, 60))
	f.Add(bytes.Repeat([]byte{0, 0, 1, 0, 1, 2, 6, 0, 0, 0}, 30))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 2000 {
			data = data[:2000]
		}
		runSim(t, data)
	})
}
