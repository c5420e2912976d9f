package policysvc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

func put(t *testing.T, st store.Store, r api.Resource) error {
	t.Helper()
	api.Default(r)
	v, err := api.StoreValue(r)
	if err != nil {
		t.Fatal(err)
	}
	kind, ns, name := api.Key(r)
	_, err = st.Txn(context.Background(), []store.Op{{Type: store.OpPut, Key: store.Key{Kind: kind, Namespace: ns, Name: name}, Value: v}})
	return err
}

func del(st store.Store, kind, ns, name string) error {
	_, err := st.Txn(context.Background(), []store.Op{{Type: store.OpDelete, Key: store.Key{Kind: kind, Namespace: ns, Name: name}}})
	return err
}

func TestTierInvariants(t *testing.T) {
	st := storetest.Single(t, Register)

	gnp := &api.GlobalNetworkPolicy{Metadata: api.ObjectMeta{Name: "security.deny"}, Spec: api.GlobalNetworkPolicySpec{Tier: "security"}}
	err := put(t, st, gnp)
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), `spec.tier: tier "security" does not exist`) {
		t.Fatalf("policy in a missing tier: got %v", err)
	}
	np := &api.NetworkPolicy{Metadata: api.ObjectMeta{Name: "web", Namespace: "prod"}}
	if err := put(t, st, np); err == nil || !strings.Contains(err.Error(), `tier "default" does not exist`) {
		t.Fatalf("policy in the default tier before it exists: got %v", err)
	}
	if err := put(t, st, api.DefaultTier()); err != nil {
		t.Fatal(err)
	}
	if err := put(t, st, np); err != nil {
		t.Fatalf("policy in the default tier: %v", err)
	}
	if err := put(t, st, &api.Tier{Metadata: api.ObjectMeta{Name: "security"}}); err != nil {
		t.Fatal(err)
	}
	if err := put(t, st, gnp); err != nil {
		t.Fatalf("policy in an existing tier: %v", err)
	}

	err = del(st, api.KindTier, "", "security")
	if !errors.Is(err, store.ErrNotAllowed) || !strings.Contains(err.Error(), `tier "security" still has policies (GlobalNetworkPolicy security.deny)`) {
		t.Fatalf("deleting a tier with policies: got %v", err)
	}
	if _, ok := st.Get(store.Key{Kind: api.KindTier, Name: "security"}); !ok {
		t.Fatal("the refused delete removed the tier")
	}
	err = del(st, api.KindTier, "", api.DefaultTierName)
	if !errors.Is(err, store.ErrNotAllowed) {
		t.Fatalf("deleting the default tier: got %v", err)
	}

	// Deleting the policy and the tier in one transaction, in that order.
	_, err = st.Txn(context.Background(), []store.Op{
		{Type: store.OpDelete, Key: store.Key{Kind: api.KindGlobalNetworkPolicy, Name: "security.deny"}},
		{Type: store.OpDelete, Key: store.Key{Kind: api.KindTier, Name: "security"}},
	})
	if err != nil {
		t.Fatalf("policy then tier in one transaction: %v", err)
	}
}
