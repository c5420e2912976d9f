// Package policy is Calico's policy model computed for one node
// (calico.md §1.1–1.7, §2, §3): from the policies, tiers, profiles,
// endpoints (the workloads of every node, host endpoints) and network sets
// of the cluster, the policy section of this node's desired dataplane
// ([dataplane.PolicyState]) — address sets, named-port sets, one chain
// per policy and direction, and per local endpoint the ordered tiers and
// profiles it goes through. It also evaluates that model for one packet
// ([Tracer]), which is what `weft policy trace` prints.
//
// It is pure (no I/O, no clock) and incremental: a [Calculator] keeps a
// label index over every endpoint and network set and, per selector used
// in a rule, the set of matching addresses. An update costs in proportion
// to what it touches:
//
//   - a label change of an endpoint re-evaluates the active selectors
//     against that endpoint (changing only the sets it enters or leaves)
//     and, for a local endpoint, which policies select it;
//   - a policy edit re-renders that policy, and changes the dispatch of
//     the local endpoints it selects or selected;
//   - [Calculator.State] rebuilds only what changed since the last call
//     and shares everything else with the previous state.
//
// The result depends only on the current inputs, never on their order
// (tests replay sequences of states in shuffled orders).
//
// # Semantics worth knowing
//
//   - Selectors and namespaces: a NetworkPolicy's rule selectors are
//     limited to its own namespace unless they carry a namespaceSelector;
//     namespaceSelector global() selects the non-namespaced objects (host
//     endpoints, global network sets). A namespace's labels are the
//     metadata.labels of its profile kns.<namespace> plus
//     projectcalico.org/name: <namespace>.
//   - An endpoint's labels are its own, plus the labelsToApply of its
//     profiles (its own win; an earlier profile wins over a later one).
//   - Ordering (§2.3): tiers by order (unset last), then name; policies in
//     a tier by order, then name, namespace, kind.
//   - A policy in a tier that does not exist (never written to the store,
//     which refuses it; seen transiently while listing) sorts after every
//     tier with defaultAction Deny.
//   - doNotTrack and preDNAT policies apply to host endpoints only;
//     forwarded traffic through a host endpoint is policed only by
//     applyOnForward policies.
package policy
