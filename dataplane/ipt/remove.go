package ipt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/weftnet/weft/internal/netns"
)

// Removing what the iptables backend wrote: when the node switched to the
// nftables backend (the firewall manager calls RemoveAll once the
// nftables ruleset is in place, so workloads are never unprotected), and
// from the iptables variant not in use (a machine that switched between
// iptables-legacy and iptables-nft).

// RemoveAll removes weft's jumps, chains and ipsets, in both variants,
// from the namespace netnsPath ("" for the current one). Foreign rules,
// chains and sets stay. Nothing installed is nothing to remove.
func RemoveAll(ctx context.Context, netnsPath string) error {
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil
	}
	ns, err := netns.Open(netnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	r := &runner{ns: ns}
	var errs []error
	for _, variant := range []string{"nft", "legacy"} {
		errs = append(errs, removeChains(ctx, r, exec.LookPath, variant))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return removeSets(ctx, r, nil)
}

// removeChains removes weft's jumps and chains of one variant.
func removeChains(ctx context.Context, r *runner, lookPath func(string) (string, error), variant string) error {
	var errs []error
	for _, v := range families {
		if variant == "legacy" && !legacyLoaded(v) {
			// No legacy table exists: reading would load the module.
			continue
		}
		save, err := tool(lookPath, variant, v, "save")
		if err != nil {
			continue
		}
		restore, err := tool(lookPath, variant, v, "restore")
		if err != nil {
			continue
		}
		out, err := r.run(ctx, "", save)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for table, st := range parseSave(out) {
			if len(st.chains) == 0 && len(st.jumps) == 0 {
				continue
			}
			var sb strings.Builder
			sb.WriteString("*" + table + "\n")
			for _, lines := range st.jumps {
				for _, l := range lines {
					sb.WriteString("-D" + strings.TrimPrefix(l, "-A") + "\n")
				}
			}
			names := make([]string, 0, len(st.chains))
			for name := range st.chains {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				sb.WriteString(":" + name + " - [0:0]\n")
			}
			for _, name := range names {
				sb.WriteString("-X " + name + "\n")
			}
			sb.WriteString("COMMIT\n")
			if _, err := r.run(ctx, sb.String(), restore, "--noflush", "-w", "2"); err != nil {
				errs = append(errs, fmt.Errorf("remove weft's chains from %s (IPv%d, iptables-%s): %w", table, v, variant, err))
			}
		}
	}
	return errors.Join(errs...)
}

// legacyLoaded reports whether legacy iptables tables can exist (the
// module is loaded).
func legacyLoaded(v uint8) bool {
	f := "/proc/net/ip_tables_names"
	if v == 6 {
		f = "/proc/net/ip6_tables_names"
	}
	_, err := os.Stat(f)
	return err == nil
}

// removeSets destroys weft's ipsets except those keep names.
func removeSets(ctx context.Context, r *runner, keep map[string]bool) error {
	out, err := r.run(ctx, "", "ipset", "save")
	if err != nil {
		return err
	}
	var sb strings.Builder
	for name := range parseIPSets(out) {
		if !keep[name] {
			sb.WriteString("destroy " + name + "\n")
		}
	}
	if sb.Len() == 0 {
		return nil
	}
	if _, err := r.run(ctx, sb.String(), "ipset", "-exist", "restore"); err != nil {
		return fmt.Errorf("destroy weft's ipsets: %w", err)
	}
	return nil
}
