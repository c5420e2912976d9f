package policysvc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

func code(err error) string {
	var le *localapi.Error
	if errors.As(err, &le) {
		return le.Code
	}
	return ""
}

func workload(ns, name, node, ip string, labels map[string]string) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{}
	w.Metadata.Namespace = ns
	w.Metadata.Labels = labels
	w.Spec = api.WorkloadEndpointSpec{Orchestrator: api.OrchestratorWeft, Workload: name, Node: node, Endpoint: "eth0",
		InterfaceName: "weft0123456789a", IPNetworks: []string{ip}, Profiles: []string{api.NamespaceProfileName(ns)}}
	api.Default(w)
	return w
}

func TestLabel(t *testing.T) {
	st := storetest.Single(t, Register)
	s := New(Config{Node: "n1"}, st, nil)
	ctx := context.Background()
	if err := put(t, st, workload("prod", "db", "n1", "10.0.0.5/32", map[string]string{"role": "db"})); err != nil {
		t.Fatal(err)
	}
	// Set a new key, and refuse changing an existing one without
	// --overwrite.
	resp, err := s.Label(ctx, localapi.LabelRequest{Kind: "workload", Namespace: "prod", Name: "db", Set: map[string]string{"tier": "data"}})
	if err != nil || !resp.Changed || resp.Labels["tier"] != "data" || resp.Labels["role"] != "db" || resp.Labels["projectcalico.org/namespace"] != "" {
		t.Fatalf("set: %+v, %v", resp, err)
	}
	_, err = s.Label(ctx, localapi.LabelRequest{Kind: "workload", Namespace: "prod", Name: "db", Set: map[string]string{"role": "cache"}})
	if code(err) != localapi.CodeInvalid || !strings.Contains(err.Error(), "--overwrite is false") {
		t.Fatalf("change without overwrite: %v", err)
	}
	resp, err = s.Label(ctx, localapi.LabelRequest{Kind: "workload", Namespace: "prod", Name: "db", Set: map[string]string{"role": "cache"}, Overwrite: true, Remove: []string{"tier", "nope"}})
	if err != nil || resp.Labels["role"] != "cache" || resp.Labels["tier"] != "" || len(resp.Notes) != 1 {
		t.Fatalf("overwrite and remove: %+v, %v", resp, err)
	}
	// The endpoint keeps everything else (addresses, interface) and its
	// system labels.
	w, _, _ := s.findWorkload("prod", "db")
	if w.Spec.IPNetworks[0] != "10.0.0.5/32" || w.Spec.InterfaceName != "weft0123456789a" || w.Metadata.Labels[api.LabelNamespace] != "prod" {
		t.Fatalf("endpoint after labelling: %+v", w)
	}
	// Bad input changes nothing.
	for _, req := range []localapi.LabelRequest{
		{Kind: "workload", Namespace: "prod", Name: "db", Set: map[string]string{"bad key!": "x"}},
		{Kind: "workload", Namespace: "prod", Name: "db", Set: map[string]string{"projectcalico.org/namespace": "x"}},
		{Kind: "workload", Namespace: "prod", Name: "nope", Set: map[string]string{"a": "b"}},
		{Kind: "pod", Name: "db", Set: map[string]string{"a": "b"}},
	} {
		if _, err := s.Label(ctx, req); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	// A namespace: its profile is created (allowing all) when missing.
	resp, err = s.Label(ctx, localapi.LabelRequest{Kind: "namespace", Name: "default", Set: map[string]string{"name": "default"}})
	if err != nil || resp.Labels["name"] != "default" {
		t.Fatalf("namespace: %+v, %v", resp, err)
	}
	o, ok := st.Get(store.Key{Kind: api.KindProfile, Name: "kns.default"})
	if !ok || !strings.Contains(string(o.Value), `"action":"Allow"`) || !strings.Contains(string(o.Value), `"name":"default"`) {
		t.Fatalf("profile: %s", o.Value)
	}
}

func TestTrace(t *testing.T) {
	st := storetest.Single(t, Register)
	s := New(Config{Node: "n1"}, st, nil)
	for _, r := range []api.Resource{
		api.DefaultTier(),
		allowAll("kns.default"), allowAll("kns.prod"),
		workload("default", "client", "n1", "10.0.0.1/32", map[string]string{"role": "client"}),
		workload("prod", "db", "n2", "10.0.0.5/32", map[string]string{"role": "db"}),
		&api.GlobalNetworkPolicy{Metadata: api.ObjectMeta{Name: "deny-db-access"}, Spec: api.GlobalNetworkPolicySpec{
			Selector: "role == 'db'", Ingress: []api.Rule{{Action: api.ActionDeny, Source: api.EntityRule{NamespaceSelector: "name == 'default'"}}, {Action: api.ActionAllow}},
		}},
	} {
		if err := put(t, st, r); err != nil {
			t.Fatal(err)
		}
	}
	// Without namespace labels the policy's second rule allows.
	resp, err := s.Trace(localapi.TraceRequest{From: "client", To: "prod/db", Protocol: "tcp", Port: 5432})
	if err != nil || resp.Verdict != "allow" {
		t.Fatalf("before labelling: %+v, %v", resp, err)
	}
	if _, err := s.Label(context.Background(), localapi.LabelRequest{Kind: "namespace", Name: "default", Set: map[string]string{"name": "default"}}); err != nil {
		t.Fatal(err)
	}
	resp, err = s.Trace(localapi.TraceRequest{From: "client", To: "prod/db", Protocol: "tcp", Port: 5432})
	if err != nil || resp.Verdict != "deny" || len(resp.Hops) != 2 {
		t.Fatalf("after labelling: %+v, %v", resp, err)
	}
	last := resp.Hops[1].Steps[len(resp.Hops[1].Steps)-1]
	if last.Policy != "GlobalNetworkPolicy deny-db-access" || last.Rule != 0 || last.Action != "Deny" {
		t.Fatalf("decided by %+v", last)
	}
	if _, err := s.Trace(localapi.TraceRequest{From: "ghost", To: "10.0.0.5", Port: 1}); code(err) != localapi.CodeNotFound {
		t.Fatalf("unknown workload: %v", err)
	}
	if _, err := s.Trace(localapi.TraceRequest{From: "client", To: "10.0.0.5", Protocol: "gre"}); code(err) != localapi.CodeInvalid {
		t.Fatalf("bad protocol: %v", err)
	}
}

func allowAll(name string) *api.Profile {
	p := &api.Profile{}
	p.Metadata.Name = name
	p.Spec.Ingress = []api.Rule{{Action: api.ActionAllow}}
	p.Spec.Egress = []api.Rule{{Action: api.ActionAllow}}
	return p
}
