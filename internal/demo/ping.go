package demo

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/weftnet/weft/internal/site"
)

// endpoint is a workload as the ping matrix sees it.
type endpoint struct {
	Name string
	NS   *site.Namespace
	Addr netip.Addr
}

// matrix holds the result of every ordered pair of distinct endpoints.
type matrix struct {
	Endpoints []endpoint
	Results   map[[2]int]site.PingResult // [from, to] indexes into Endpoints
}

// pingAll sends ICMP echo requests from inside every endpoint's namespace
// to every other endpoint, resending until each pair has answered or ctx
// ends, and returns the matrix.
func pingAll(ctx context.Context, eps []endpoint) matrix {
	m := matrix{Endpoints: eps, Results: map[[2]int]site.PingResult{}}
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
			res := eps[i].NS.Ping(ctx, targets)
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
