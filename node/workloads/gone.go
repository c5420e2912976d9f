package workloads

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/calc"
)

// Run removes, until ctx ends, the local workloads whose network namespace
// is gone (their container or process ended without a delete): the
// dataplane reports them with dataplane.ErrBadNetNS, this service deletes
// their endpoint and releases their addresses. The dataplane never writes
// to the store itself.
func (s *Service) Run(ctx context.Context) {
	var last uint64
	for {
		rep, changed := s.dp.LatestReport()
		if rep.Seq != last {
			last = rep.Seq
			s.removeGone(ctx, rep)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func (s *Service) removeGone(ctx context.Context, rep *dataplane.Report) {
	for iface, perr := range rep.Problems {
		if !errors.Is(perr, dataplane.ErrBadNetNS) {
			continue
		}
		dw, ok := rep.Workload(iface)
		if !ok {
			continue
		}
		if _, err := os.Stat(dw.NetNS); err == nil {
			continue // it came back (or was never gone): leave it
		}
		s.removeVanished(ctx, dw)
	}
}

func (s *Service) removeVanished(ctx context.Context, dw dataplane.Workload) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	defer s.lock(dw.Namespace, dw.Name)()
	w, o, ok := s.find(dw.Namespace, dw.Name)
	if !ok || w.Spec.Node != s.cfg.Node || w.Metadata.Annotations[calc.AnnotationNetNS] != dw.NetNS {
		return
	}
	s.log.Info("cleaning up a workload whose network namespace is gone", "namespace", dw.Namespace, "name", dw.Name, "netns", dw.NetNS)
	if err := s.remove(ctx, w, o); err != nil {
		s.log.Warn("cleaning up a vanished workload failed; retrying on the next report", "namespace", dw.Namespace, "name", dw.Name, "err", err)
	}
}
