package dataplane

import (
	"context"
	"errors"
	"sync"
)

// Errors the drivers report about one workload (in [Report.Problems]).
var (
	// ErrBadNetNS: the workload's namespace path is missing or is not a
	// network namespace (for a running workload: its namespace is gone).
	ErrBadNetNS = errors.New("bad workload network namespace")
	// ErrIfaceTaken: an interface with the wanted name exists and is not
	// this workload's.
	ErrIfaceTaken = errors.New("interface name taken")
	// ErrDrift: a check found the plumbing different from what is desired.
	ErrDrift = errors.New("workload plumbing differs from the desired state")
)

// Permanent reports whether a workload problem will not go away by
// retrying (a bad namespace, a name or address held by something weft does
// not own): a workload add fails at once with it rather than waiting.
func Permanent(err error) bool {
	return errors.Is(err, ErrBadNetNS) || errors.Is(err, ErrIfaceTaken) || errors.Is(err, ErrForeignRoute)
}

// Report is what the loop publishes after every apply pass: which desired
// state it applied and what is still not in place. Reports are immutable.
//
// It is how a writer learns that the dataplane has caught up with its
// write (a workload add waits until its workload is in [Report.Applied]
// with no problem), and how the agent learns of workloads whose namespace
// vanished ([ErrBadNetNS] in Problems): the dataplane never writes to the
// store itself.
type Report struct {
	// Seq counts reports, from 1.
	Seq uint64
	// Revision is the Revision of the applied state. It can advance
	// without a pass when a newer state equals the applied one.
	Revision uint64
	// PassRevision is the Revision of the state the last pass applied:
	// the kernel holds at least everything up to it.
	PassRevision uint64
	// Applied is the desired state the last pass applied (nil before the
	// first pass).
	Applied *Desired
	// Problems maps a workload's host interface to what keeps it from being
	// completely in place (its plumbing, its host routes, later its
	// policy); a workload of Applied that is not listed is in place.
	// Interfaces of workloads no longer desired that could not be removed
	// are listed too.
	Problems map[string]error
	// RouteProblems are the routes of Applied the last pass could not
	// program, with why: a route of Applied not listed is in the kernel
	// (what the BGP speaker checks before it advertises a block).
	RouteProblems map[RouteKey]error
	// Err is the whole pass's error (nil when everything applied).
	Err error
}

// RouteInKernel reports whether the last pass programmed the route with
// key k of its Applied state.
func (r *Report) RouteInKernel(k RouteKey) bool {
	if r == nil || r.Applied == nil {
		return false
	}
	if _, failed := r.RouteProblems[k]; failed {
		return false
	}
	for _, rt := range r.Applied.Routes {
		if rt.Key() == k {
			return true
		}
	}
	return false
}

// Workload returns the applied workload with that host interface.
func (r *Report) Workload(hostIface string) (Workload, bool) {
	if r == nil || r.Applied == nil {
		return Workload{}, false
	}
	for _, w := range r.Applied.Workloads {
		if w.HostIface == hostIface {
			return w, true
		}
	}
	return Workload{}, false
}

// WorkloadReporter is implemented by managers that can tell, per workload,
// what they could not put in place. The loop asks every such manager after
// each pass and merges the answers into [Report.Problems].
type WorkloadReporter interface {
	// WorkloadProblems maps host interfaces to errors. The loop does not
	// keep the map.
	WorkloadProblems() map[string]error
}

// RouteReporter is implemented by the manager of routes: the routes the
// last pass could not program. The loop merges the answer into
// [Report.RouteProblems].
type RouteReporter interface {
	RouteProblems() map[RouteKey]error
}

// reports holds the latest report and wakes waiters when it changes.
type reports struct {
	mu      sync.Mutex
	cur     *Report
	changed chan struct{}
}

func newReports() *reports {
	return &reports{cur: &Report{}, changed: make(chan struct{})}
}

func (r *reports) publish(next Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next.Seq = r.cur.Seq + 1
	r.cur = &next
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *reports) latest() (*Report, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, r.changed
}

// Reports is the source of [Report]s (the loop).
type Reports interface {
	// LatestReport returns the newest report and a channel closed when a
	// newer one is published.
	LatestReport() (*Report, <-chan struct{})
}

// WaitReport waits until done accepts a report (the current one or a
// later one), or until ctx ends. done returns (true, nil) to stop waiting
// successfully and a non-nil error to stop with that error.
func WaitReport(ctx context.Context, src Reports, done func(*Report) (bool, error)) (*Report, error) {
	for {
		r, changed := src.LatestReport()
		ok, err := done(r)
		if err != nil {
			return r, err
		}
		if ok {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-changed:
		}
	}
}
