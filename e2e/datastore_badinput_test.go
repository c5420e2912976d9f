package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store/pki"
)

// TestDatastoreBadInput feeds the CLI, on a follower (so writes are
// forwarded), what it must refuse: malformed YAML, an unknown kind, an
// unknown field, an invalid name, a stale resourceVersion (replace, apply
// and delete), a request over 1 MiB (through the CLI and straight to the
// socket), deleting a missing resource, and a read-only kind. Each gets
// exactly one clear line on stderr and a non-zero exit, and changes nothing.
func TestDatastoreBadInput(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	h1 := c.hosts[0]
	resp := c.waitMembers(h1, 30*time.Second, wantMembers{voters: names(c.hosts...)})
	var h *testbed.Host // a follower
	for _, x := range c.hosts {
		if x != c.leader(resp) {
			h = x
			break
		}
	}
	c.mustApply(h, globalNetworkSet("target", "192.0.2.1/32"))
	stale := c.weft(h, "", "get", "globalnetworkset", "target", "-o", "yaml")
	if stale.code != 0 || !strings.Contains(stale.stdout, "resourceVersion:") {
		t.Fatalf("%s", stale)
	}
	c.mustApply(h, globalNetworkSet("target", "192.0.2.2/32")) // the stored revision moves on
	before := c.storeState(h)
	for _, x := range c.hosts {
		c.waitFor(20*time.Second, x.Name()+" to catch up", func() error {
			if got := c.storeState(x); got != before {
				return fmt.Errorf("state %s, want %s", got, before)
			}
			return nil
		})
	}

	big := &strings.Builder{}
	big.WriteString("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: huge\nspec:\n  nets:\n")
	for i := 0; big.Len() <= localapi.MaxBodyBytes; i++ {
		fmt.Fprintf(big, "  - 10.%d.%d.%d/32\n", i>>16&255, i>>8&255, i&255)
	}
	staleUpdate := strings.Replace(stale.stdout, "192.0.2.1/32", "203.0.113.1/32", 1)

	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string // in the error line, case-insensitive
	}{
		{"malformed YAML", []string{"apply", "-f", "-"}, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: bad\n spec: [\n", "line"},
		{"unknown kind", []string{"apply", "-f", "-"}, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSetz\nmetadata:\n  name: bad\n", "GlobalNetworkSetz"},
		{"unknown apiVersion", []string{"apply", "-f", "-"}, strings.Replace(globalNetworkSet("bad", "192.0.2.7/32"), "projectcalico.org/v3", "example.com/v9", 1), "example.com/v9"},
		{"unknown field", []string{"apply", "-f", "-"}, globalNetworkSet("bad", "192.0.2.7/32") + "  bogusField: 1\n", "bogusField"},
		{"invalid name", []string{"apply", "-f", "-"}, globalNetworkSet("Bad_Name", "192.0.2.7/32"), "Bad_Name"},
		{"invalid value", []string{"apply", "-f", "-"}, globalNetworkSet("bad", "192.0.2.300/32"), "192.0.2.300"},
		{"invalid document in a list", []string{"apply", "-f", "-"}, globalNetworkSet("fine", "192.0.2.8/32") + "---\n" + globalNetworkSet("bad", "not-a-net"), "not-a-net"},
		{"stale replace", []string{"replace", "-f", "-"}, staleUpdate, "conflict"},
		{"stale apply", []string{"apply", "-f", "-"}, staleUpdate, "conflict"},
		{"stale delete", []string{"delete", "-f", "-"}, staleUpdate, "conflict"},
		{"create existing", []string{"create", "-f", "-"}, globalNetworkSet("target", "192.0.2.9/32"), "exists"},
		{"replace missing", []string{"replace", "-f", "-"}, globalNetworkSet("missing", "192.0.2.9/32"), "missing"},
		{"over 1 MiB", []string{"apply", "-f", "-"}, big.String(), "limit"},
		{"delete missing", []string{"delete", "globalnetworkset", "missing"}, "", "not found"},
		{"delete unknown kind", []string{"delete", "widgets", "x"}, "", "widgets"},
		{"get unknown kind", []string{"get", "widgets"}, "", "widgets"},
		{"read-only kind", []string{"apply", "-f", "-"}, workloadEndpoint("h1-k8s-pod-eth0"), "read-only"},
		{"no input", []string{"apply", "-f", "-"}, "", "no resources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.weft(h, tc.stdin, tc.args...)
			t.Logf("%s", strings.TrimSpace(r.stderr))
			checkOneLineError(t, r, tc.want)
			if got := c.storeState(h); got != before {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, got)
			}
		})
	}

	// Straight to the socket, past the CLI's own size check: the agent
	// refuses a body over 1 MiB by itself.
	t.Run("over 1 MiB to the socket", func(t *testing.T) {
		wr, err := localapi.NewClient(h.Socket()).Write(context.Background(), localapi.WriteRequest{Mode: localapi.ModeApply, Data: big.String()})
		var le *localapi.Error
		if !errors.As(err, &le) || le.Code == "" {
			t.Fatalf("agent answered %+v, %v; want a coded error", wr, err)
		}
		t.Logf("%s: %s", le.Code, le.Message)
		if got := c.storeState(h); got != before {
			t.Errorf("state changed:\nbefore %s\nafter  %s", before, got)
		}
	})
	// Just under the CLI's limit as YAML is still refused or applied
	// whole, never half.
	t.Run("near 1 MiB", func(t *testing.T) {
		doc := big.String()
		doc = doc[:strings.LastIndex(doc[:localapi.MaxBodyBytes-4096], "\n")+1]
		r := c.weft(h, doc, "apply", "-f", "-")
		t.Logf("%d bytes: %s", len(doc), r)
		if r.code != 0 {
			checkOneLineError(t, r, "")
			if got := c.storeState(h); got != before {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, got)
			}
			return
		}
		got := c.getObject(h, "globalnetworksets", "huge")
		if want := strings.Count(doc, "/32"); strings.Count(got, "/32") != want {
			t.Errorf("huge applied with %d nets, want %d", strings.Count(got, "/32"), want)
		}
		if r := c.weft(h, "", "delete", "globalnetworkset", "huge"); r.code != 0 {
			t.Fatalf("%s", r)
		}
	})
	stopAll(t, c.hosts)
}

// TestDatastoreClusterPortRefusesNonMembers: requests on the cluster port
// from a machine that is not a member (the site router) get nothing and
// change nothing: plain TCP garbage, TLS without a client certificate on
// the raft and RPC protocols, TLS without a weft protocol, a certificate
// from another CA that claims a member's name, and a join attempt with a
// forged proof. A member's own certificate on the same path gets an answer,
// so the refusals are not the test client's fault.
func TestDatastoreClusterPortRefusesNonMembers(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	h1, h3 := c.hosts[0], c.hosts[2]
	all := names(c.hosts...)
	c.waitMembers(h1, 30*time.Second, wantMembers{voters: all})
	c.mustApply(h1, globalNetworkSet("target", "192.0.2.1/32"))
	for _, x := range c.hosts {
		c.waitObject(x, "globalnetworksets", "target", 20*time.Second)
	}
	before := c.storeState(h1)
	target := h1.ClusterAddress()
	from := c.site.Router()

	// Control: h3's own identity is answered.
	member, err := pki.LoadIdentity(pki.Dir(h3.DataDir()))
	if err != nil {
		t.Fatal(err)
	}
	memberCert, err := tls.X509KeyPair(member.CertPEM(), member.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := clusterPortRequest(from, target, &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{memberCert}, NextProtos: []string{pki.ALPNRPC},
	}, "GET", "/v1/status", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("control: a member's certificate on the RPC protocol: %d %q, %v", code, body, err)
	}

	// A certificate of another CA, for a member's name.
	otherCA, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "h2")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := otherCA.SignNode(csr, "h2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := tls.X509KeyPair(append(certPEM, otherCA.CertPEM()...), key)
	if err != nil {
		t.Fatal(err)
	}
	propose := `{"command":"txn","payload":[{"type":"delete","key":{"kind":"GlobalNetworkSet","name":"target"}}]}`
	for _, tc := range []struct {
		name string
		conf *tls.Config
	}{
		{"rpc without a certificate", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{pki.ALPNRPC}}},
		{"raft without a certificate", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{pki.ALPNRaft}}},
		{"no weft protocol", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, Certificates: []tls.Certificate{memberCert}}},
		{"TLS 1.2", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{pki.ALPNRPC}, MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{memberCert}}},
		{"another cluster's certificate", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{pki.ALPNRPC}, Certificates: []tls.Certificate{foreign}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/status", "/v1/propose", "/v1/members/add"} {
				code, body, err := clusterPortRequest(from, target, tc.conf, "POST", path, propose)
				if err == nil || code != 0 {
					t.Errorf("POST %s: answered %d %q; want the connection refused", path, code, body)
				} else {
					t.Logf("POST %s: %v", path, err)
				}
			}
		})
	}

	t.Run("plain TCP garbage", func(t *testing.T) {
		for _, junk := range []string{
			"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
			"\x16\x03\x01\x00\x05hello" + strings.Repeat("\x00\xff", 4096),
			strings.Repeat("garbage ", 10000),
		} {
			got, err := rawExchange(from, target, junk)
			if strings.Contains(got, "HTTP/") || strings.Contains(got, "weft") {
				t.Errorf("garbage %.20q got an answer: %q", junk, got)
			}
			t.Logf("garbage %.20q: read %d bytes, %v", junk, len(got), err)
		}
	})

	t.Run("join with a forged proof", func(t *testing.T) {
		conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{pki.ALPNJoin}}
		code, body, err := clusterPortRequest(from, target, conf, "GET", "/v1/join/nonce", "")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /v1/join/nonce: %d %q, %v", code, body, err)
		}
		var nonce struct {
			Nonce []byte `json:"nonce"`
		}
		if err := json.Unmarshal([]byte(body), &nonce); err != nil || len(nonce.Nonce) < 16 {
			t.Fatalf("GET /v1/join/nonce: %q, %v", body, err)
		}
		key, err := pki.NewNodeKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key, "intruder")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range [][]byte{nonce.Nonce, []byte(strings.Repeat("n", 32))} {
			forged, _ := json.Marshal(map[string]any{"name": "intruder", "csr": csr, "nonce": n, "proof": make([]byte, 32)})
			code, body, err = clusterPortRequest(from, target, conf, "POST", "/v1/join", string(forged))
			if err != nil || code < 400 || code >= 500 || strings.Contains(body, "CERTIFICATE") {
				t.Errorf("POST /v1/join with a forged proof: %d %q, %v; want a 4xx refusal", code, body, err)
			}
			t.Logf("POST /v1/join: %d %s", code, strings.TrimSpace(body))
		}
		// The other calls are not served on the join protocol.
		code, body, _ = clusterPortRequest(from, target, conf, "POST", "/v1/propose", propose)
		if code == http.StatusOK {
			t.Errorf("POST /v1/propose on the join protocol: %d %q", code, body)
		}
	})

	for _, x := range c.hosts {
		c.waitMembers(x, 20*time.Second, wantMembers{voters: all})
		if got := c.storeState(x); got != before {
			t.Errorf("%s: state changed:\nbefore %s\nafter  %s", x.Name(), before, got)
		}
	}
	if !strings.Contains(h1.Logs(), "certificate") {
		t.Errorf("h1 logged nothing about the refused certificates")
	}
	stopAll(t, c.hosts)
}

// storeState summarises what a refused request must not change: the
// listings of the kinds the tests write, and the target object.
func (c *datastoreCluster) storeState(h *testbed.Host) string {
	c.t.Helper()
	return fmt.Sprintf("globalnetworksets %v, ippools %v, nodes %v, workloadendpoints %q, target %s",
		c.listNames(h, "globalnetworksets"), c.listNames(h, "ippools"), c.listNames(h, "nodes"),
		c.weft(h, "", "get", "workloadendpoints", "-A").stdout,
		strings.Join(strings.Fields(c.getObject(h, "globalnetworksets", "target")), " "))
}

// clusterPortRequest sends one HTTP request over TLS (conf) to addr's
// cluster port from inside ns, and returns the status and body, or the
// error that stopped it.
func clusterPortRequest(ns *testbed.Netns, addr string, conf *tls.Config, method, path, body string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialTLSContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			raw, err := ns.DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, conf)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		},
	}}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), err
}

// rawExchange writes junk to addr over plain TCP from inside ns and returns
// whatever came back before the connection closed (or 5 s passed).
func rawExchange(ns *testbed.Netns, addr, junk string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, werr := conn.Write([]byte(junk))
	b, rerr := io.ReadAll(bufio.NewReader(conn))
	return string(b), errors.Join(werr, rerr)
}

func workloadEndpoint(name string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: %s
  namespace: default
spec:
  node: h1
  orchestrator: k8s
  workload: pod
  endpoint: eth0
  interfaceName: weft0123456789a
  ipNetworks:
  - 10.244.0.5/32
`, name)
}
