// Package store is weft's replicated datastore: every node holds a full
// replica of a go-memdb state machine fed by a hashicorp/raft log, so reads
// and watches are local while writes go through the leader.
//
// types.go is the contract its users program against (Store, Tx, Registry,
// the errors). The rest implements it:
//
//   - Node (node.go): Open bootstraps, joins or resumes a member; it serves
//     reads from the local replica, forwards writes to the leader, and
//     manages membership with raft-autopilot.
//   - stateMachine (fsm*.go): the raft FSM — objects with revisions, the
//     built-in txn command and the registered commands with their
//     validators, snapshots, and the watch hub. It knows nothing about the
//     network.
//   - The cluster port (transport, pki) carries raft, node-to-node RPC
//     (rpc.go) and the join protocol (join.go) over mutual TLS.
//
// docs/datastore.md describes the design, the on-disk layout and the
// disaster recovery procedure.
package store
