package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestStoreValueAndFromStore(t *testing.T) {
	created := time.Date(2024, 5, 1, 10, 0, 0, 123, time.FixedZone("x", 3600))
	p := &IPPool{Metadata: ObjectMeta{
		Name: "p1", Labels: map[string]string{"a": "b"},
		ResourceVersion: "7", UID: "old-uid", CreationTimestamp: &created,
	}, Spec: IPPoolSpec{CIDR: "10.0.0.0/16"}}
	Default(p)
	v, err := StoreValue(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, owned := range []string{"resourceVersion", "uid", "creationTimestamp"} {
		if strings.Contains(string(v), owned) {
			t.Errorf("stored value contains %s: %s", owned, v)
		}
	}
	if p.Metadata.UID != "old-uid" || p.Metadata.ResourceVersion != "7" {
		t.Error("StoreValue modified its input")
	}
	var m map[string]any
	if err := json.Unmarshal(v, &m); err != nil || m["kind"] != "IPPool" || m["apiVersion"] != Group {
		t.Errorf("stored value lacks kind/apiVersion: %s", v)
	}

	r, err := FromStore(KindIPPool, v, "uid-1", 42, created)
	if err != nil {
		t.Fatal(err)
	}
	got := r.(*IPPool)
	if got.Metadata.UID != "uid-1" || got.Metadata.ResourceVersion != "42" {
		t.Errorf("meta %+v", got.Metadata)
	}
	if want := time.Date(2024, 5, 1, 9, 0, 0, 0, time.UTC); !got.Metadata.CreationTimestamp.Equal(want) ||
		got.Metadata.CreationTimestamp.Location() != time.UTC {
		t.Errorf("creationTimestamp %v, want %v", got.Metadata.CreationTimestamp, want)
	}
	got.Metadata.UID, got.Metadata.ResourceVersion, got.Metadata.CreationTimestamp = "old-uid", "7", p.Metadata.CreationTimestamp
	if !reflect.DeepEqual(got, p) {
		t.Errorf("FromStore(StoreValue(p)) != p:\n%#v\n%#v", got, p)
	}

	if _, err := FromStore(KindTier, v, "u", 1, time.Time{}); err == nil || !strings.Contains(err.Error(), `stored value of kind "IPPool" under kind Tier`) {
		t.Errorf("kind mismatch: %v", err)
	}
	if _, err := FromStore("Nope", v, "u", 1, time.Time{}); err == nil {
		t.Error("unknown kind should fail")
	}
	if _, err := FromStore(KindIPPool, []byte("{"), "u", 1, time.Time{}); err == nil {
		t.Error("bad JSON should fail")
	}
	r, _ = FromStore(KindIPPool, v, "u", 1, time.Time{})
	if r.GetMeta().CreationTimestamp != nil {
		t.Error("zero creation time should leave creationTimestamp unset")
	}
}

func TestParseRevision(t *testing.T) {
	for in, want := range map[string]uint64{"": 0, "0": 0, "1": 1, "18446744073709551615": 1<<64 - 1} {
		got, err := ParseRevision(in)
		if err != nil || got != want {
			t.Errorf("ParseRevision(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"-1", "1.5", "abc", "18446744073709551616", " 1"} {
		if _, err := ParseRevision(bad); err == nil {
			t.Errorf("ParseRevision(%q) should fail", bad)
		}
	}
	if FormatRevision(0) != "" || FormatRevision(12) != "12" {
		t.Error("FormatRevision")
	}
}

func TestDeepCopyIsIndependent(t *testing.T) {
	np := &NetworkPolicy{Metadata: ObjectMeta{Name: "n", Namespace: "ns", Labels: map[string]string{"a": "b"}},
		Spec: NetworkPolicySpec{Ingress: []Rule{{Action: ActionAllow, Destination: EntityRule{Ports: []Port{SinglePort(80)}}}}}}
	c := DeepCopy(np).(*NetworkPolicy)
	c.Metadata.Labels["a"] = "changed"
	c.Spec.Ingress[0].Destination.Ports[0] = SinglePort(81)
	if np.Metadata.Labels["a"] != "b" || np.Spec.Ingress[0].Destination.Ports[0].MinPort != 80 {
		t.Error("DeepCopy shares memory with the original")
	}
}
