package ipt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns"
)

// runner runs the iptables and ipset tools in the backend's namespace.
type runner struct {
	ns  *netns.Target
	env []string
}

// run runs name with args, stdin as its input, and returns its output.
func (r *runner) run(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), r.env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	var err error
	if r.ns == nil || r.ns.IsCurrent() {
		err = cmd.Run()
	} else {
		err = netns.Run(r.ns, cmd)
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 400 {
			msg = msg[:400] + "..."
		}
		return out.Bytes(), fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return out.Bytes(), nil
}

// tool is the name of an iptables tool of a variant and family:
// "iptables-nft-restore", "ip6tables-legacy-save"...; the plain name when
// the variant's does not exist (Felix's findBestBinary).
func tool(lookPath func(string) (string, error), variant string, v uint8, op string) (string, error) {
	pfx := "iptables"
	if v == 6 {
		pfx = "ip6tables"
	}
	for _, c := range []string{pfx + "-" + variant + "-" + op, pfx + "-" + op} {
		if _, err := lookPath(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("neither %s-%s-%s nor %s-%s found in PATH", pfx, variant, op, pfx, op)
}

// countRules counts the rules of an iptables-save output.
func countRules(out []byte) int {
	n := 0
	for line := range bytes.SplitSeq(out, []byte("\n")) {
		if len(line) > 0 && line[0] == '-' {
			n++
		}
	}
	return n
}

// detectVariant picks the iptables variant the machine uses, as Felix
// (and the Kubernetes iptables-wrapper it copies) does: legacy when the
// legacy tables hold 10 rules or more, or at least as many as the nft
// ones; nft otherwise. save runs a save tool and returns its output.
func detectVariant(lookPath func(string) (string, error), save func(name string) []byte) (variant string, legacy, nft int) {
	count := func(variant string) int {
		n := 0
		for _, v := range []uint8{6, 4} {
			if t, err := tool(lookPath, variant, v, "save"); err == nil {
				n += countRules(save(t))
			}
		}
		return n
	}
	legacy = count("legacy")
	if legacy >= 10 {
		return "legacy", legacy, -1
	}
	nft = count("nft")
	if legacy >= nft {
		return "legacy", legacy, nft
	}
	return "nft", legacy, nft
}

// ---- reading iptables-save -------------------------------------------------

// savedTable is one table of an iptables-save output, as far as weft
// cares: its weft chains with their rules' tags (and counters), and the
// jump rules of the built-in chains.
type savedTable struct {
	chains map[string]*savedChain
	// jumps are the jump lines (as saved, "-A ...") of each built-in
	// chain to weft's chain.
	jumps map[string][]string
}

type savedChain struct {
	tags           []string
	packets, bytes []uint64
}

// parseSave reads an iptables-save output (with or without counters).
func parseSave(out []byte) map[string]*savedTable {
	res := map[string]*savedTable{}
	var cur *savedTable
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{chains: map[string]*savedChain{}, jumps: map[string][]string{}}
			res[line[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":weft-"):
			name, _, _ := strings.Cut(line[1:], " ")
			cur.chains[name] = &savedChain{}
		default:
			var pk, by uint64
			if strings.HasPrefix(line, "[") {
				end := strings.IndexByte(line, ']')
				if end < 0 {
					continue
				}
				p, b, _ := strings.Cut(line[1:end], ":")
				pk, _ = strconv.ParseUint(p, 10, 64)
				by, _ = strconv.ParseUint(b, 10, 64)
				line = strings.TrimSpace(line[end+1:])
			}
			if !strings.HasPrefix(line, "-A ") {
				continue
			}
			chain, rest, _ := strings.Cut(line[3:], " ")
			tag := commentOf(rest)
			if c := cur.chains[chain]; c != nil {
				if !strings.HasPrefix(tag, tagPrefix) || tag == jumpTag {
					tag = "" // a rule weft did not write
				}
				c.tags = append(c.tags, tag)
				c.packets = append(c.packets, pk)
				c.bytes = append(c.bytes, by)
				continue
			}
			if tag == jumpTag {
				cur.jumps[chain] = append(cur.jumps[chain], line)
			}
		}
	}
	return res
}

// commentOf extracts the comment of a saved rule ("" when none).
func commentOf(rest string) string {
	const opt = "--comment "
	i := strings.Index(rest, opt)
	if i < 0 {
		return ""
	}
	s := rest[i+len(opt):]
	if strings.HasPrefix(s, `"`) {
		if end := strings.IndexByte(s[1:], '"'); end >= 0 {
			return s[1 : end+1]
		}
		return ""
	}
	c, _, _ := strings.Cut(s, " ")
	return c
}

// ---- reading ipset save ----------------------------------------------------

// isWeftSet reports whether an ipset is weft's: "weft4-..." or "weft6-...".
func isWeftSet(name string) bool {
	return strings.HasPrefix(name, "weft4-") || strings.HasPrefix(name, "weft6-")
}

// parseIPSets reads `ipset save` output: weft's sets with their members
// in canonical text. A member that does not parse is kept verbatim (it
// then differs from anything weft wants and is removed).
func parseIPSets(out []byte) map[string]*iset {
	res := map[string]*iset{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || !isWeftSet(f[1]) {
			continue
		}
		switch f[0] {
		case "create":
			s := &iset{name: f[1], typ: f[2]}
			for i := 3; i+1 < len(f); i++ {
				if f[i] == "family" {
					switch f[i+1] {
					case "inet":
						s.fam = 4
					case "inet6":
						s.fam = 6
					}
				}
			}
			res[s.name] = s
		case "add":
			if s := res[f[1]]; s != nil {
				s.members = append(s.members, canonicalMember(s.typ, f[2]))
			}
		}
	}
	for _, s := range res {
		slices.Sort(s.members)
		s.members = slices.Compact(s.members)
	}
	return res
}

func canonicalMember(typ, m string) string {
	switch typ {
	case typeNet:
		if p, err := netip.ParsePrefix(m); err == nil {
			return netMember(p)
		}
		if a, err := netip.ParseAddr(m); err == nil {
			return a.String()
		}
	case typeIPPort:
		addr, rest, ok := strings.Cut(m, ",")
		if a, err := netip.ParseAddr(addr); ok && err == nil {
			proto, port, _ := strings.Cut(rest, ":")
			if n, err := strconv.Atoi(proto); err == nil {
				proto = protoName(uint8(n))
			}
			return a.String() + "," + proto + ":" + port
		}
	}
	return m
}

// ---- the kernel as a model ---------------------------------------------------

// kernelView is what the kernel holds of weft's: chains, sets, and the
// jumps of the built-in chains, by family and table.
type kernelView struct {
	model model
	jumps map[string][]string // chainKey(fam, table, builtin) → saved jump lines
}

// readKernel loads weft's chains and sets. The model's chains carry only
// their tags: enough to compare with what is wanted.
func (b *Backend) readKernel(ctx context.Context) (kernelView, error) {
	kv := kernelView{jumps: map[string][]string{}}
	ced := dataplane.Map[*ichain]{}.Edit()
	for _, v := range []uint8{4, 6} {
		out, err := b.run.run(ctx, "", b.tools[v].save)
		if err != nil {
			return kv, fmt.Errorf("iptables: read the kernel: %w", err)
		}
		for table, st := range parseSave(out) {
			for name, sc := range st.chains {
				c := &ichain{fam: v, table: table, name: name}
				for _, t := range sc.tags {
					c.rules = append(c.rules, irule{tag: t})
				}
				ced.Set(c.key(), c)
			}
			for bi, lines := range st.jumps {
				kv.jumps[chainKey(v, table, bi)] = lines
			}
		}
	}
	out, err := b.run.run(ctx, "", "ipset", "save")
	if err != nil {
		return kv, fmt.Errorf("ipset: read the kernel: %w", err)
	}
	sed := dataplane.Map[*iset]{}.Edit()
	for name, s := range parseIPSets(out) {
		sed.Set(name, s)
	}
	kv.model = model{sets: sed.Map(), chains: ced.Map()}
	return kv, nil
}
