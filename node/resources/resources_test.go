package resources

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

func singleStore(t *testing.T) *store.Node {
	return storetest.Single(t, func(r *store.Registry) { ipam.Register(r, slog.New(slog.DiscardHandler)) })
}

const poolYAML = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: p1
spec:
  cidr: 10.20.0.0/16
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: set1
  labels: {role: db}
spec:
  nets: [192.0.2.0/24]
`

func code(err error) string {
	var le *localapi.Error
	if errors.As(err, &le) {
		return le.Code
	}
	return ""
}

func TestResourceWrites(t *testing.T) {
	st := singleStore(t)
	s := New(st, nil)
	ctx := context.Background()

	res, err := s.write(ctx, localapi.ModeApply, []byte(poolYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Action != "created" || res[1].Action != "created" {
		t.Fatalf("apply results = %+v", res)
	}
	// Applying the same again changes nothing.
	res, err = s.write(ctx, localapi.ModeApply, []byte(poolYAML))
	if err != nil || res[0].Action != "unchanged" {
		t.Fatalf("re-apply: %+v, %v", res, err)
	}
	// create of an existing resource fails and writes nothing of the batch.
	_, err = s.write(ctx, localapi.ModeCreate, []byte(strings.Replace(poolYAML, "name: set1", "name: set2", 1)))
	if code(err) != localapi.CodeExists {
		t.Fatalf("create existing: %v", err)
	}
	if _, ok := st.Get(store.Key{Kind: api.KindGlobalNetworkSet, Name: "set2"}); ok {
		t.Fatal("a failed create left part of its batch behind")
	}
	// replace with a stale resourceVersion is a conflict.
	rs, _, err := s.listResources(ctx, "globalnetworksets", "", "set1", false)
	if err != nil || len(rs) != 1 {
		t.Fatalf("get: %v %v", rs, err)
	}
	rv := rs[0].GetMeta().ResourceVersion
	stale := strings.Replace(poolYAML[strings.Index(poolYAML, "---"):], "labels: {role: db}", "labels: {role: db}\n  resourceVersion: \""+rv+"\"", 1)
	if _, err := s.write(ctx, localapi.ModeReplace, []byte(stale)); err != nil {
		t.Fatalf("replace at the current revision: %v", err)
	}
	if _, err := s.write(ctx, localapi.ModeReplace, []byte(stale)); code(err) != localapi.CodeConflict {
		t.Fatalf("replace at a stale revision: %v", err)
	}
	// replace of a missing resource fails.
	if _, err := s.write(ctx, localapi.ModeReplace, []byte(strings.Replace(poolYAML, "name: p1", "name: p9", 1))); code(err) != localapi.CodeNotFound {
		t.Fatalf("replace missing: %v", err)
	}
}

func TestResourceWritesRejectBadInput(t *testing.T) {
	st := singleStore(t)
	s := New(st, nil)
	ctx := context.Background()
	cases := map[string]string{
		"unknown field":  "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, blokSize: 26}\n",
		"bad value":      "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, blockSize: 33}\n",
		"unknown kind":   "apiVersion: projectcalico.org/v3\nkind: Frobnicator\nmetadata: {name: p}\n",
		"read-only kind": "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: n-weft-w-eth0, namespace: default}\nspec: {node: n, orchestrator: weft, workload: w, endpoint: eth0, interfaceName: weft0, ipNetworks: [10.0.0.1/32]}\n",
		"invalid name":   "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: Bad_Name}\nspec: {nets: [10.0.0.0/8]}\n",
		"twice":          "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: a}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: a}\n",
		"empty":          "\n",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			rev := st.Revision()
			_, err := s.write(ctx, localapi.ModeApply, []byte(doc))
			if code(err) != localapi.CodeInvalid {
				t.Fatalf("err = %v, want an invalid-input error", err)
			}
			if st.Revision() != rev {
				t.Fatal("a rejected write changed the store")
			}
		})
	}
	// Overlapping pools are refused inside the store (IPAM's validator).
	if _, err := s.write(ctx, localapi.ModeApply, []byte(poolYAML)); err != nil {
		t.Fatal(err)
	}
	overlap := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.20.128.0/17}\n"
	if _, err := s.write(ctx, localapi.ModeApply, []byte(overlap)); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("overlapping pool: %v", err)
	}
}

func TestResourceDelete(t *testing.T) {
	st := singleStore(t)
	s := New(st, nil)
	ctx := context.Background()
	if _, err := s.write(ctx, localapi.ModeApply, []byte(poolYAML)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.delete(ctx, localapi.DeleteRequest{Kind: "gnetset", Name: "nope"}); code(err) != localapi.CodeNotFound {
		t.Fatalf("delete missing: %v", err)
	}
	res, err := s.delete(ctx, localapi.DeleteRequest{Kind: "globalnetworksets", Name: "set1"})
	if err != nil || len(res) != 1 || res[0].Action != "deleted" {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if _, ok := st.Get(store.Key{Kind: api.KindGlobalNetworkSet, Name: "set1"}); ok {
		t.Fatal("still there after delete")
	}
	if _, err := s.delete(ctx, localapi.DeleteRequest{Kind: "workloadendpoints", Name: "x", Namespace: "default"}); code(err) != localapi.CodeInvalid {
		t.Fatalf("delete of a read-only kind: %v", err)
	}
}

// A write's warnings come from the warners, for every resource written
// (also one left unchanged), after the write succeeded.
func TestWriteWarnings(t *testing.T) {
	st := singleStore(t)
	s := New(st, nil).AddWarner(func(r api.Resource) []string {
		if p, ok := r.(*api.IPPool); ok && p.Spec.IPIPMode == api.EncapAlways {
			return []string{"IPPool " + p.Metadata.Name + ": no IP-in-IP here"}
		}
		return nil
	})
	ctx := context.Background()
	doc := strings.Replace(poolYAML, "cidr: 10.20.0.0/16", "cidr: 10.20.0.0/16\n  ipipMode: Always", 1)
	for range 2 {
		res, warnings, err := s.writeWarn(ctx, localapi.ModeApply, []byte(doc))
		if err != nil || len(res) != 2 || len(warnings) != 1 || warnings[0] != "IPPool p1: no IP-in-IP here" {
			t.Fatalf("results %+v, warnings %q, err %v", res, warnings, err)
		}
	}
	if _, warnings, err := s.writeWarn(ctx, localapi.ModeApply, []byte("kind: IPPool\n")); err == nil || warnings != nil {
		t.Errorf("a refused write warned %q (err %v)", warnings, err)
	}
}

// noQuorum is a store whose linearizable barrier fails (no leader): its
// local replica may lag the cluster.
type noQuorum struct{ store.Store }

func (noQuorum) ConsistentRevision(context.Context) (uint64, error) { return 0, store.ErrNoLeader }

// A write compares against the cluster's current state, never a replica
// that may lag or be cut off: without quorum it is refused whole, rather
// than reporting "unchanged" for a write the cluster never saw.
func TestWriteNeedsAConsistentRead(t *testing.T) {
	st := singleStore(t)
	s := New(noQuorum{st}, nil)
	before := st.Revision()
	_, err := s.write(context.Background(), localapi.ModeApply, []byte(poolYAML))
	if code(err) != localapi.CodeUnavailable {
		t.Fatalf("apply without quorum: %v, want unavailable", err)
	}
	if st.Revision() != before {
		t.Fatal("something was written")
	}
}
