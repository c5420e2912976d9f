package ipam

import (
	"slices"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

func TestPoolValidation(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "a", "10.0.0.0/16", 26)
	addPool(t, f, "v6", "fd00::/48", 0)
	for name, tc := range map[string]struct {
		pool api.IPPool
		want string
	}{
		"overlap":             {poolObj("b", "10.0.128.0/24", 26), "overlaps IPPool a (10.0.0.0/16)"},
		"overlap containing":  {poolObj("b", "10.0.0.0/8", 26), "overlaps IPPool a"},
		"overlap v6":          {poolObj("b", "fd00:0:0:5::/64", 122), "overlaps IPPool v6"},
		"link-local":          {poolObj("b", "169.254.0.0/24", 26), "link-local"},
		"link-local v6":       {poolObj("b", "fe80::/64", 122), "link-local"},
		"loopback":            {poolObj("b", "127.0.0.0/24", 26), "spec.cidr: 127.0.0.0/24 overlaps the IPv4 loopback range"},
		"loopback v6":         {poolObj("b", "::/120", 122), "IPv6 loopback"},
		"multicast":           {poolObj("b", "224.0.0.0/24", 26), "IPv4 multicast"},
		"multicast v6":        {poolObj("b", "ff02::/64", 122), "IPv6 multicast"},
		"host bits":           {poolObj("b", "10.1.0.1/24", 26), "host bits"},
		"block size v4":       {poolObj("b", "10.1.0.0/16", 19), "blockSize"},
		"block size v6":       {poolObj("b", "fd01::/64", 100), "blockSize"},
		"smaller than block":  {poolObj("b", "10.1.0.0/28", 26), "smaller than one block"},
		"garbage":             {poolObj("b", "ten/8", 26), "cidr"},
		"bad selector":        {poolObj("b", "10.1.0.0/24", 26, func(s *api.IPPoolSpec) { s.NodeSelector = "zone ==" }), "nodeSelector"},
		"ipip on v6 (api)":    {poolObj("b", "fd01::/64", 122, func(s *api.IPPoolSpec) { s.IPIPMode = api.EncapAlways }), "IPIP"},
		"ipip and vxlan":      {poolObj("b", "10.1.0.0/24", 26, func(s *api.IPPoolSpec) { s.IPIPMode, s.VXLANMode = api.EncapAlways, api.EncapAlways }), "IPIP and VXLAN"},
		"cidr immutable":      {poolObj("a", "10.0.0.0/15", 26), "cidr"},
		"blockSize immutable": {poolObj("a", "10.0.0.0/16", 24), "blockSize"},
	} {
		t.Run(name, func(t *testing.T) {
			assertUnchanged(t, f, func() {
				err := f.put(store.Key{Kind: KindIPPool, Name: tc.pool.Metadata.Name}, tc.pool)
				errorIs(t, err, store.ErrInvalid)
				errContains(t, err, tc.want)
			})
		})
	}
	// A disabled pool may be smaller than its block size; other changes
	// to a pool are fine.
	addPool(t, f, "tiny", "10.2.0.0/28", 26, func(s *api.IPPoolSpec) { s.Disabled = true })
	addPool(t, f, "a", "10.0.0.0/16", 26, func(s *api.IPPoolSpec) { s.NATOutgoing = true })
	// The defaulted block size is the same as the explicit one.
	addPool(t, f, "v6", "fd00::/48", 122)
}

func TestReservationAndConfigValidation(t *testing.T) {
	f := newFake(t)
	r := api.IPReservation{Metadata: api.ObjectMeta{Name: "r"}, Spec: api.IPReservationSpec{ReservedCIDRs: []string{"10.0.0.0/33"}}}
	errorIs(t, f.put(store.Key{Kind: KindIPReservation, Name: "r"}, r), store.ErrInvalid)
	addReservation(t, f, "ok", "10.0.0.1", "10.0.1.0/24", "fd00::/64")

	for name, tc := range map[string]struct {
		req  ConfigureRequest
		want string
	}{
		"auto off without strict":   {ConfigureRequest{AutoAllocateBlocks: ptr(false)}, "autoAllocateBlocks=false requires strictAffinity=true"},
		"max blocks without strict": {ConfigureRequest{MaxBlocksPerHost: ptr(int32(4))}, "requires strictAffinity=true"},
		"negative max":              {ConfigureRequest{StrictAffinity: ptr(true), MaxBlocksPerHost: ptr(int32(-1))}, "maxBlocksPerHost"},
		"cooldown too long":         {ConfigureRequest{IPCooldownSeconds: ptr(int32(1201))}, "ipCooldownSeconds"},
	} {
		t.Run(name, func(t *testing.T) {
			assertUnchanged(t, f, func() {
				_, err := f.command(CmdConfigure, tc.req)
				errorIs(t, err, store.ErrInvalid)
				errContains(t, err, tc.want)
			})
		})
	}
	resp := run[ConfigureResponse](t, f, CmdConfigure, ConfigureRequest{StrictAffinity: ptr(true), MaxBlocksPerHost: ptr(int32(4))})
	if !resp.Spec.StrictAffinity || resp.Spec.MaxBlocksPerHost != 4 {
		t.Fatalf("configure = %+v", resp)
	}
	// A partial update keeps the other fields; turning strict off while
	// maxBlocksPerHost is set is refused.
	_, err := f.command(CmdConfigure, ConfigureRequest{StrictAffinity: ptr(false)})
	errContains(t, err, "maxBlocksPerHost=4 requires strictAffinity=true")
	resp = run[ConfigureResponse](t, f, CmdConfigure, ConfigureRequest{IPCooldownSeconds: ptr(int32(30))})
	if !resp.Spec.StrictAffinity || resp.Spec.MaxBlocksPerHost != 4 || resp.Spec.IPCooldownSeconds != 30 {
		t.Fatalf("partial configure = %+v", resp)
	}
	// A raw write of a bad configuration is refused by the validator.
	bad := api.IPAMConfiguration{Metadata: api.ObjectMeta{Name: ConfigName}, Spec: api.IPAMConfigurationSpec{AutoAllocateBlocks: ptr(false)}}
	errorIs(t, f.put(ConfigKey(), bad), store.ErrInvalid)
	other := api.IPAMConfiguration{Metadata: api.ObjectMeta{Name: "other"}}
	errorIs(t, f.put(store.Key{Kind: KindIPAMConfiguration, Name: "other"}, other), store.ErrInvalid)
	rep, err := Show(f, ShowOptions{ShowConfiguration: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Configuration) != 4 || rep.Configuration[0] != (ConfigRow{"StrictAffinity", "true"}) {
		t.Fatalf("show configuration %+v", rep.Configuration)
	}
}

func TestDeletePool(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	addPool(t, f, "q", "10.1.0.0/24", 26)
	a := assignIP(t, f, "h1", "n1")
	// n2 claims a block and empties it.
	b := assignIP(t, f, "h2", "n2")
	if _, err := release(f, ReleaseRequest{IP: b.IP}); err != nil {
		t.Fatal(err)
	}
	// A raw delete of a pool with blocks is refused.
	assertUnchanged(t, f, func() {
		err := f.del(store.Key{Kind: KindIPPool, Name: "p"})
		errorIs(t, err, store.ErrInvalid)
		errContains(t, err, "ipam.deletePool")
	})
	// In use, no force: refused, nothing changes (not even the empty
	// block), the pool keeps allocating.
	assertUnchanged(t, f, func() {
		_, err := f.command(CmdDeletePool, DeletePoolRequest{Name: "p"})
		errorIs(t, err, ErrPoolInUse)
		errorIs(t, err, store.ErrConflict)
		errContains(t, err, "still has 1 address in use: not deleted, nothing changed")
	})
	r := wl("h3", "n1")
	r.Pools = []string{"p"}
	got, err := tryAssign(f, r)
	if err != nil {
		t.Fatalf("the pool stopped allocating after a refused delete: %v", err)
	}
	if _, err := release(f, ReleaseRequest{IP: got.Addresses[0].IP}); err != nil {
		t.Fatal(err)
	}
	// Force: the address is released and the pool deleted.
	resp := run[DeletePoolResponse](t, f, CmdDeletePool, DeletePoolRequest{Name: "p", Force: true})
	if !resp.Deleted || len(resp.Released) != 1 || resp.Released[0].IP != a.IP || len(resp.BlocksDeleted) != 2 || !slices.Contains(resp.BlocksDeleted, b.Block) {
		t.Fatalf("forced delete: %+v", resp)
	}
	if _, ok := f.get(store.Key{Kind: KindIPPool, Name: "p"}); ok {
		t.Fatal("pool still there")
	}
	if _, ok := f.get(HandleKey("h1")); ok {
		t.Fatal("handle of a released address survived")
	}
	if hasAffinity(f, "n1", a.Block) {
		t.Fatal("affinity survived")
	}
	_, err = f.command(CmdDeletePool, DeletePoolRequest{Name: "p"})
	errorIs(t, err, store.ErrNotFound)
	// An unused pool is deleted at once, but not at a stale revision.
	addPool(t, f, "empty", "10.2.0.0/24", 26)
	o, _ := f.get(store.Key{Kind: KindIPPool, Name: "empty"})
	assertUnchanged(t, f, func() {
		_, err := f.command(CmdDeletePool, DeletePoolRequest{Name: "empty", Revision: o.Revision + 1})
		errorIs(t, err, store.ErrConflict)
	})
	if resp := run[DeletePoolResponse](t, f, CmdDeletePool, DeletePoolRequest{Name: "empty", Revision: o.Revision}); !resp.Deleted {
		t.Fatalf("%+v", resp)
	}
	assertConsistent(t, f)
}

func TestInternalKindValidators(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	p := mustPrefix("10.0.0.0/26")
	good := newBlock(p, "n1", f.now, 1)
	for name, tc := range map[string]struct {
		key   store.Key
		value any
		want  string
	}{
		"block outside pools":  {BlockKey("10.9.0.0/26"), newBlock(mustPrefix("10.9.0.0/26"), "n1", f.now, 1), "outside every IP pool"},
		"block wrong size":     {BlockKey("10.0.0.0/27"), newBlock(mustPrefix("10.0.0.0/27"), "n1", f.now, 1), "block size"},
		"block under alias":    {BlockKey("10.0.0.64/26"), good, "holds block"},
		"ordinal twice":        {BlockKey("10.0.0.0/26"), func() *Block { b := newBlock(p, "n1", f.now, 1); b.Unallocated[1] = 0; return b }(), "both"},
		"affinity mismatch":    {AffinityKey("n1", "10.0.0.0/26"), BlockAffinity{Node: "n2", CIDR: "10.0.0.0/26"}, "says node"},
		"affinity no node":     {store.Key{Kind: KindBlockAffinity, Name: "10.0.0.0-26"}, BlockAffinity{CIDR: "10.0.0.0/26"}, "no node"},
		"handle mismatch":      {HandleKey("h"), Handle{HandleID: "x", Blocks: map[string]int{"10.0.0.0-26": 1}}, "says handle"},
		"handle empty":         {HandleKey("h"), Handle{HandleID: "h"}, "holds no block"},
		"handle zero count":    {HandleKey("h"), Handle{HandleID: "h", Blocks: map[string]int{"10.0.0.0-26": 0}}, "count 0"},
		"handle bad block":     {HandleKey("h"), Handle{HandleID: "h", Blocks: map[string]int{"nope": 1}}, "invalid block name"},
		"block not json":       {BlockKey("10.0.0.0/26"), []byte("{"), "decode"},
		"block too few ords":   {BlockKey("10.0.0.0/26"), func() *Block { b := newBlock(p, "n1", f.now, 1); b.Allocations = b.Allocations[:10]; return b }(), "slots"},
		"reservation not json": {store.Key{Kind: KindIPReservation, Name: "r"}, []byte("[]"), "decode"},
	} {
		t.Run(name, func(t *testing.T) {
			assertUnchanged(t, f, func() {
				err := f.put(tc.key, tc.value)
				errorIs(t, err, ErrInvariant)
				errContains(t, err, tc.want)
			})
		})
	}
	if err := f.put(BlockKey("10.0.0.0/26"), good); err != nil {
		t.Fatalf("a valid block was refused: %v", err)
	}
}
