package policysvc

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// Register adds the policy invariants to a store registry (creating its
// maps if needed). They run inside the raft apply for every write of the
// kinds, from any command or transaction, so no race slips past them:
//
//   - a NetworkPolicy or GlobalNetworkPolicy names a tier that exists
//     (Calico's client checks this; here the store does);
//   - a Tier that policies still name cannot be deleted, and the default
//     tier never.
//
// Within one transaction the operations apply in order: a tier created
// before its policies, or deleted after them, passes (the resources
// service orders them so).
func Register(reg *store.Registry) {
	if reg.Validators == nil {
		reg.Validators = map[string][]store.Validator{}
	}
	reg.Validators[api.KindNetworkPolicy] = append(reg.Validators[api.KindNetworkPolicy], validatePolicyWrite)
	reg.Validators[api.KindGlobalNetworkPolicy] = append(reg.Validators[api.KindGlobalNetworkPolicy], validatePolicyWrite)
	reg.Validators[api.KindTier] = append(reg.Validators[api.KindTier], validateTierWrite)
}

// policyTier is the part of a stored policy the validators read.
type policyTier struct {
	Spec struct {
		Tier string `json:"tier"`
	} `json:"spec"`
}

func tierOf(value []byte) (string, error) {
	var p policyTier
	if err := json.Unmarshal(value, &p); err != nil {
		return "", err
	}
	if p.Spec.Tier == "" {
		return api.DefaultTierName, nil
	}
	return p.Spec.Tier, nil
}

func validatePolicyWrite(tx store.Tx, _, new *store.Object) error {
	if new == nil {
		return nil // deleting a policy is always allowed
	}
	tier, err := tierOf(new.Value)
	if err != nil {
		return fmt.Errorf("%w: decode: %v", store.ErrInvalid, err)
	}
	if _, ok := tx.Get(store.Key{Kind: api.KindTier, Name: tier}); !ok {
		return fmt.Errorf("%w: spec.tier: tier %q does not exist (create it first)", store.ErrInvalid, tier)
	}
	return nil
}

func validateTierWrite(tx store.Tx, old, new *store.Object) error {
	if new != nil {
		return nil
	}
	if old.Name == api.DefaultTierName {
		return fmt.Errorf("%w: the default tier cannot be deleted", store.ErrNotAllowed)
	}
	var users []string
	for _, kind := range []string{api.KindNetworkPolicy, api.KindGlobalNetworkPolicy} {
		for _, o := range tx.List(kind, "") {
			if t, err := tierOf(o.Value); err == nil && t == old.Name {
				name := o.Name
				if o.Namespace != "" {
					name = o.Namespace + "/" + o.Name
				}
				users = append(users, kind+" "+name)
			}
		}
	}
	if len(users) == 0 {
		return nil
	}
	sort.Strings(users)
	more := ""
	if len(users) > 5 {
		more = fmt.Sprintf(" and %d more", len(users)-5)
		users = users[:5]
	}
	return fmt.Errorf("%w: tier %q still has policies (%s%s): delete them first", store.ErrNotAllowed, old.Name, strings.Join(users, ", "), more)
}
