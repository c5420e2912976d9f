// Package wireguard is the node's WireGuard store writer: it carries out
// what the calculation decides about this node's WireGuard (calc.TunnelNeeds:
// the tunnel addresses and what the Node publishes) with the node's keys
// in data_dir, rotates the key without losing traffic, and serves
// `weft wireguard rotate-key`. It decides nothing about routing (the
// calculation does) and never touches the device (the dataplane's
// wireguard driver does).
package wireguard

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

// cmdUpdate is the store command that changes the WireGuard part of one
// Node (inside the raft apply: it never overwrites what another writer
// changed on the Node meanwhile).
const cmdUpdate = "node.wireguard"

// nodeUpdate sets the fields that are not nil; "" (0, false) clears.
type nodeUpdate struct {
	Name           string  `json:"name"`
	PublicKey      *string `json:"publicKey,omitempty"`
	NextKey        *string `json:"nextKey,omitempty"`
	ListenPort     *int    `json:"listenPort,omitempty"`
	HostEncryption *bool   `json:"hostEncryption,omitempty"`
	Addr4          *string `json:"addr4,omitempty"`
	Addr6          *string `json:"addr6,omitempty"`
}

func (u nodeUpdate) empty() bool {
	return u.PublicKey == nil && u.NextKey == nil && u.ListenPort == nil && u.HostEncryption == nil && u.Addr4 == nil && u.Addr6 == nil
}

// Register adds the WireGuard store command to a registry.
func Register(reg *store.Registry) {
	if reg.Commands == nil {
		reg.Commands = map[string]store.CommandHandler{}
	}
	reg.Commands[cmdUpdate] = applyUpdate
}

func applyUpdate(tx store.Tx, payload []byte) ([]byte, error) {
	var u nodeUpdate
	if err := json.Unmarshal(payload, &u); err != nil || u.Name == "" {
		return nil, fmt.Errorf("%w: wireguard node update", store.ErrInvalid)
	}
	k := store.Key{Kind: api.KindNode, Name: u.Name}
	o, ok := tx.Get(k)
	if !ok {
		return nil, fmt.Errorf("%w: node %s is not registered yet", store.ErrNotFound, u.Name)
	}
	r, err := api.FromStore(api.KindNode, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		return nil, err
	}
	n := r.(*api.Node)
	setAnnotation := func(key string, v *string) {
		if v == nil {
			return
		}
		if *v == "" {
			delete(n.Metadata.Annotations, key)
			return
		}
		if n.Metadata.Annotations == nil {
			n.Metadata.Annotations = map[string]string{}
		}
		n.Metadata.Annotations[key] = *v
	}
	if u.PublicKey != nil {
		n.Status.WireguardPublicKey = *u.PublicKey
	}
	setAnnotation(calc.AnnotationWireGuardNextKey, u.NextKey)
	if u.ListenPort != nil {
		port := ""
		if *u.ListenPort != 0 {
			port = strconv.Itoa(*u.ListenPort)
		}
		setAnnotation(calc.AnnotationWireGuardPort, &port)
	}
	if u.HostEncryption != nil {
		v := ""
		if *u.HostEncryption {
			v = "true"
		}
		setAnnotation(calc.AnnotationWireGuardHostEncryption, &v)
	}
	if len(n.Metadata.Annotations) == 0 {
		n.Metadata.Annotations = nil
	}
	if u.Addr4 != nil || u.Addr6 != nil {
		if n.Spec.Wireguard == nil {
			n.Spec.Wireguard = &api.NodeWireguardSpec{}
		}
		if u.Addr4 != nil {
			n.Spec.Wireguard.InterfaceIPv4Address = *u.Addr4
		}
		if u.Addr6 != nil {
			n.Spec.Wireguard.InterfaceIPv6Address = *u.Addr6
		}
		if *n.Spec.Wireguard == (api.NodeWireguardSpec{}) {
			n.Spec.Wireguard = nil
		}
	}
	n.Metadata.ResourceVersion, n.Metadata.UID, n.Metadata.CreationTimestamp = "", "", nil
	api.Default(n)
	if err := api.Validate(n); err != nil {
		return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	v, err := api.StoreValue(n)
	if err != nil {
		return nil, err
	}
	if string(o.Value) == string(v) {
		return []byte(`{"changed":false}`), nil
	}
	if _, err := tx.Put(k, v); err != nil {
		return nil, err
	}
	return []byte(`{"changed":true}`), nil
}
