// Package conformance is the policy conformance table: Calico policy
// scenarios as data (resources to apply, labels to change, packets that
// must or must not get through), independent of the policy backend. The
// end-to-end test (e2e/policy_conformance_test.go) runs every scenario on
// a 3-node cluster with real workloads for each backend (nftables today;
// the iptables backend runs the same table), checking both the kernel
// (real packets) and `weft policy trace` (the model) against the
// expectation.
//
// # The world every scenario starts from
//
// Three nodes h1, h2, h3 (VXLAN for IPv4, native IPv6), namespaces
// default (labels name=default) and prod (name=prod, env=prod), and the
// workloads of [Workloads], each listening on TCP 80, 443, 5432 and 8080
// and answering UDP on 53, IPv4 and IPv6; each host listens on TCP 22 and
// 9999. With no policy everything reaches everything. A scenario's steps
// run in order; after its last step everything it applied is deleted and
// every label it changed restored.
//
// # Templates
//
// Resources and labels are Go templates with these functions: ip, ip6
// (a workload's address: ip "prod/db"), cidr, cidr6 (the same as a /32 or
// /128), hostip, hostcidr (a host's IPv4 address: hostip "h2"), iface (a
// host's underlay interface: iface "h2").
package conformance

// Workload is one workload of the world.
type Workload struct {
	Namespace, Name string
	// Node is h1, h2 or h3.
	Node   string
	Labels map[string]string
	// Ports are named ports, NAME:PROTO:PORT (`weft workload add --port`).
	Ports []string
}

// Ref is the workload's "namespace/name".
func (w Workload) Ref() string { return w.Namespace + "/" + w.Name }

// Workloads are the workloads of the world.
var Workloads = []Workload{
	{Namespace: "default", Name: "client", Node: "h1", Labels: map[string]string{"role": "client"}},
	{Namespace: "default", Name: "other", Node: "h2", Labels: map[string]string{"role": "other"}},
	{Namespace: "prod", Name: "web", Node: "h1", Labels: map[string]string{"app": "web"}, Ports: []string{"http:tcp:8080"}},
	{Namespace: "prod", Name: "db", Node: "h2", Labels: map[string]string{"role": "db"}, Ports: []string{"pg:tcp:5432"}},
	{Namespace: "prod", Name: "api", Node: "h3", Labels: map[string]string{"app": "api", "role": "client"}},
}

// Nodes are the hosts of the world.
var Nodes = []string{"h1", "h2", "h3"}

// NamespaceLabels are the namespaces' labels at the start of every
// scenario.
var NamespaceLabels = map[string]map[string]string{
	"default": {"name": "default"},
	"prod":    {"name": "prod", "env": "prod"},
}

// TCPPorts and UDPPorts are what every workload serves; HostTCPPorts what
// every host serves.
var (
	TCPPorts     = []int{80, 443, 5432, 8080}
	UDPPorts     = []int{53}
	HostTCPPorts = []int{22, 9999}
)

// Probe is one packet (a connection attempt) that must, or must not, get
// through.
type Probe struct {
	// From and To are a workload ("prod/db") or a host ("host:h2").
	From, To string
	// Proto is tcp, udp or ping; tcp6, udp6 and ping6 use IPv6.
	Proto string
	Port  int
	Want  bool
}

// Label changes the labels of a workload ("ns/name") or a namespace.
type Label struct {
	Target string
	Set    map[string]string
	Remove []string
}

// Step is what a scenario does, then the probes that must hold after it.
type Step struct {
	// Apply is YAML (a template) to `weft apply`.
	Apply string
	// Delete is YAML to `weft delete -f`.
	Delete string
	// LabelWorkload and LabelNamespace change labels (`weft label`).
	LabelWorkload  *Label
	LabelNamespace *Label
	Probes         []Probe
	// Counters must have counted at least one packet once the probes
	// held (the node's per-rule counters, `weft get ... -o wide`).
	Counters []Counter
}

// Counter names one rule's counter on one node.
type Counter struct {
	Node, Kind, Namespace, Name, Direction string
	Rule                                   int
}

// Scenario is one entry of the table.
type Scenario struct {
	Name string
	// Covers lists the features it exercises (see [Features]).
	Covers []string
	Steps  []Step
}

// Features are what the table must cover as a whole (the list);
// a test checks every one is covered.
var Features = []string{
	"profile", "default-deny", "types", "selector", "notSelector", "namespaceSelector", "global()",
	"cross-node", "order", "tier", "Pass", "tier-default-pass", "Allow", "Deny", "Log",
	"protocol", "notProtocol", "protocol-number", "ports", "port-range", "notPorts", "named-port",
	"icmp", "notICMP", "nets", "notNets", "ipVersion", "ipv6", "egress", "NetworkSet", "GlobalNetworkSet",
	"label-workload", "label-namespace", "host-endpoint", "failsafe", "applyOnForward", "all-interfaces",
	"preDNAT", "doNotTrack", "vxlan", "udp",
}

func p(from, to, proto string, port int, want bool) Probe {
	return Probe{From: from, To: to, Proto: proto, Port: port, Want: want}
}

// Scenarios is the table.
var Scenarios = []Scenario{
	{
		Name:   "no policy: the namespaces' profiles allow everything",
		Covers: []string{"profile", "cross-node", "udp", "vxlan", "ipv6"},
		Steps: []Step{{Probes: []Probe{
			p("default/client", "prod/db", "tcp", 5432, true),
			p("prod/api", "prod/web", "tcp", 80, true),
			p("default/other", "default/client", "ping", 0, true),
			p("default/client", "prod/db", "udp", 53, true),
			p("default/client", "prod/db", "tcp6", 5432, true),
		}}},
	},
	{
		Name:   "deny-db-access: role=db refuses ingress from namespace default",
		Covers: []string{"namespaceSelector", "Deny", "Allow", "cross-node"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-db-access}
spec:
  selector: role == 'db'
  ingress:
  - action: Deny
    source: {namespaceSelector: name == 'default'}
  - action: Allow
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, false),
				p("default/other", "prod/db", "tcp", 5432, false),
				p("prod/api", "prod/db", "tcp", 5432, true),
				p("prod/web", "prod/db", "tcp", 5432, true),
			},
		}},
	},
	{
		Name:   "a policy without rules turns on default deny for its types only",
		Covers: []string{"default-deny", "types"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: isolate-web, namespace: prod}
spec:
  selector: app == 'web'
`,
			Probes: []Probe{
				p("default/client", "prod/web", "tcp", 80, false),
				p("prod/web", "prod/db", "tcp", 5432, true),
			},
		}},
	},
	{
		Name:   "selector and ports: only role=client of the policy's namespace reaches web:80",
		Covers: []string{"selector", "ports", "protocol"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'client'}
    destination: {ports: [80]}
`,
			Probes: []Probe{
				p("prod/api", "prod/web", "tcp", 80, true),
				p("prod/api", "prod/web", "tcp", 443, false),
				p("default/client", "prod/web", "tcp", 80, false),
			},
		}},
	},
	{
		Name:   "namespaceSelector with a selector: clients of any named namespace",
		Covers: []string{"namespaceSelector", "selector"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all-clients, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    source: {selector: role == 'client', namespaceSelector: has(name)}
`,
			Probes: []Probe{
				p("default/client", "prod/web", "tcp", 80, true),
				p("default/other", "prod/web", "tcp", 80, false),
			},
		}},
	},
	{
		Name:   "order: a Deny at order 10 wins over an Allow at order 20",
		Covers: []string{"order", "Deny"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all, namespace: prod}
spec:
  order: 20
  selector: role == 'db'
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-api, namespace: prod}
spec:
  order: 10
  selector: role == 'db'
  ingress:
  - action: Deny
    source: {selector: app == 'api'}
`,
			Probes: []Probe{
				p("prod/api", "prod/db", "tcp", 5432, false),
				p("prod/web", "prod/db", "tcp", 5432, true),
			},
		}},
	},
	{
		Name:   "tiers: the security tier passes prod traffic to the default tier and denies the rest",
		Covers: []string{"tier", "Pass"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.db}
spec:
  tier: security
  selector: role == 'db'
  ingress:
  - action: Pass
    source: {namespaceSelector: name == 'prod'}
  - action: Deny
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-db, namespace: prod}
spec:
  selector: role == 'db'
  ingress: [{action: Allow}]
`,
			Probes: []Probe{
				p("prod/web", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "tcp", 5432, false),
			},
		}},
	},
	{
		Name:   "a tier with defaultAction Pass hands what it does not decide to the profiles",
		Covers: []string{"tier-default-pass", "protocol", "udp"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: lenient}
spec: {order: 50, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: lenient.no-udp}
spec:
  tier: lenient
  selector: role == 'db'
  ingress:
  - action: Deny
    protocol: UDP
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "udp", 53, false),
			},
		}},
	},
	{
		Name:   "egress: clients may not open port 443 anywhere",
		Covers: []string{"egress", "cross-node", "ports"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: no-https-out}
spec:
  selector: role == 'client'
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [443]}
  - action: Allow
`,
			Probes: []Probe{
				p("default/client", "prod/web", "tcp", 443, false),
				p("default/client", "prod/web", "tcp", 80, true),
				p("prod/api", "prod/db", "tcp", 443, false),
				p("prod/web", "prod/db", "tcp", 443, true),
			},
		}},
	},
	{
		Name:   "notProtocol: everything but UDP",
		Covers: []string{"notProtocol", "udp"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-udp, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    notProtocol: UDP
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "ping", 0, true),
				p("default/client", "prod/db", "udp", 53, false),
			},
		}},
	},
	{
		Name:   "protocol by number: 17 is UDP",
		Covers: []string{"protocol-number", "udp"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: udp-only, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    protocol: 17
`,
			Probes: []Probe{
				p("default/client", "prod/db", "udp", 53, true),
				p("default/client", "prod/db", "tcp", 5432, false),
			},
		}},
	},
	{
		Name:   "a port range with a hole (notPorts)",
		Covers: []string{"port-range", "notPorts"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: range, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: ["400:9000"], notPorts: [8080]}
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 443, true),
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "tcp", 8080, false),
				p("default/client", "prod/db", "tcp", 80, false),
			},
		}},
	},
	{
		Name:   "a named port declared by the workload",
		Covers: []string{"named-port"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: http-only, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [http]}
`,
			Probes: []Probe{
				p("default/client", "prod/web", "tcp", 8080, true),
				p("default/client", "prod/web", "tcp", 80, false),
			},
		}},
	},
	{
		Name:   "egress to another node's named port, by selector in every namespace",
		Covers: []string{"named-port", "egress", "cross-node", "namespaceSelector"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: to-pg-only, namespace: default}
spec:
  selector: role == 'client'
  egress:
  - action: Allow
    protocol: TCP
    destination: {selector: role == 'db', namespaceSelector: all(), ports: [pg]}
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "tcp", 80, false),
				p("default/client", "prod/web", "tcp", 80, false),
			},
		}},
	},
	{
		Name:   "ICMP: echo requests allowed, nothing else",
		Covers: []string{"icmp"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ping-only, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
`,
			Probes: []Probe{
				p("default/client", "prod/db", "ping", 0, true),
				p("default/client", "prod/db", "tcp", 5432, false),
			},
		}},
	},
	{
		Name:   "notICMP: ICMP other than timestamp requests is denied",
		Covers: []string{"notICMP", "Deny"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-icmp, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Deny
    protocol: ICMP
    notICMP: {type: 13}
  - action: Allow
`,
			Probes: []Probe{
				p("default/client", "prod/db", "ping", 0, false),
				p("default/client", "prod/db", "tcp", 5432, true),
			},
		}},
	},
	{
		Name:   "nets and notNets",
		Covers: []string{"nets", "notNets", "egress"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-client-net, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    source: {nets: ["{{cidr "default/client"}}"]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-to-db, namespace: prod}
spec:
  selector: app == 'api'
  egress:
  - action: Deny
    destination: {notNets: ["{{cidr "prod/db"}}"]}
  - action: Allow
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/other", "prod/db", "tcp", 5432, false),
				p("prod/api", "prod/web", "tcp", 80, false),
			},
		}},
	},
	{
		Name:   "notSelector",
		Covers: []string{"notSelector"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: not-clients}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    source: {notSelector: role == 'client'}
`,
			Probes: []Probe{
				p("prod/web", "prod/db", "tcp", 5432, true),
				p("default/other", "prod/db", "tcp", 5432, true),
				p("prod/api", "prod/db", "tcp", 5432, false),
				p("default/client", "prod/db", "tcp", 5432, false),
			},
		}},
	},
	{
		Name:   "a NetworkSet matched by label",
		Covers: []string{"NetworkSet", "selector"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: trusted, namespace: prod, labels: {kind: trusted}}
spec:
  nets: ["{{cidr "default/other"}}"]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-trusted, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    source: {selector: kind == 'trusted'}
`,
			Probes: []Probe{
				p("default/other", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "tcp", 5432, false),
			},
		}},
	},
	{
		Name:   "a GlobalNetworkSet reached with namespaceSelector global()",
		Covers: []string{"GlobalNetworkSet", "global()"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {kind: partner}}
spec:
  nets: ["{{cidr "default/client"}}"]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-partners, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    source: {namespaceSelector: global(), selector: kind == 'partner'}
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/other", "prod/db", "tcp", 5432, false),
			},
		}},
	},
	{
		Name:   "ipVersion 4: IPv6 falls to the default deny",
		Covers: []string{"ipVersion", "ipv6"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: v4-only, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    ipVersion: 4
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 5432, true),
				p("default/client", "prod/db", "tcp6", 5432, false),
				p("default/client", "prod/db", "ping6", 0, false),
			},
		}},
	},
	{
		Name:   "IPv6 nets",
		Covers: []string{"ipv6", "nets"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-client-v6, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    source: {nets: ["{{cidr6 "default/client"}}"]}
`,
			Probes: []Probe{
				p("default/client", "prod/web", "tcp6", 80, true),
				p("default/client", "prod/web", "tcp", 80, false),
				p("default/other", "prod/web", "tcp6", 80, false),
			},
		}},
	},
	{
		Name:   "Log logs and evaluation goes on",
		Covers: []string{"Log", "Allow"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: log-then-allow, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Log
  - action: Allow
    source: {selector: app == 'web'}
`,
			Probes: []Probe{
				p("prod/web", "prod/db", "tcp", 5432, true),
				p("prod/api", "prod/db", "tcp", 5432, false),
			},
			Counters: []Counter{
				{Node: "h2", Kind: "NetworkPolicy", Namespace: "prod", Name: "log-then-allow", Direction: "ingress", Rule: 0},
				{Node: "h2", Kind: "NetworkPolicy", Namespace: "prod", Name: "log-then-allow", Direction: "ingress", Rule: 1},
			},
		}},
	},
	{
		Name:   "a workload's label change takes effect in place",
		Covers: []string{"label-workload"},
		Steps: []Step{
			{
				Apply: `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-trusted-workloads, namespace: prod}
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
    source: {selector: trusted == 'yes'}
`,
				Probes: []Probe{p("prod/web", "prod/db", "tcp", 5432, false)},
			},
			{
				LabelWorkload: &Label{Target: "prod/web", Set: map[string]string{"trusted": "yes"}},
				Probes:        []Probe{p("prod/web", "prod/db", "tcp", 5432, true), p("prod/api", "prod/db", "tcp", 5432, false)},
			},
			{
				LabelWorkload: &Label{Target: "prod/web", Remove: []string{"trusted"}},
				Probes:        []Probe{p("prod/web", "prod/db", "tcp", 5432, false)},
			},
		},
	},
	{
		Name:   "a namespace's label change takes effect in place",
		Covers: []string{"label-namespace", "namespaceSelector"},
		Steps: []Step{
			{
				Apply: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-blue-team}
spec:
  selector: role == 'db'
  ingress:
  - action: Deny
    source: {namespaceSelector: team == 'blue'}
  - action: Allow
`,
				Probes: []Probe{p("default/client", "prod/db", "tcp", 5432, true)},
			},
			{
				LabelNamespace: &Label{Target: "default", Set: map[string]string{"team": "blue"}},
				Probes:         []Probe{p("default/client", "prod/db", "tcp", 5432, false), p("prod/web", "prod/db", "tcp", 5432, true)},
			},
			{
				LabelNamespace: &Label{Target: "default", Remove: []string{"team"}},
				Probes:         []Probe{p("default/client", "prod/db", "tcp", 5432, true)},
			},
		},
	},
	{
		Name:   "a namespace profile a user writes without rules denies its endpoints",
		Covers: []string{"profile"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod, labels: {name: prod, env: prod}}
spec: {}
`,
			Probes: []Probe{
				p("default/client", "prod/web", "tcp", 80, false),
				p("prod/web", "default/client", "tcp", 80, false),
				p("default/client", "default/other", "tcp", 80, true),
			},
		}, {
			// Back to the profile weft creates (the cleanup deletes
			// nothing the world needs).
			Apply: `apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod, labels: {name: prod, env: prod}}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
`,
			Probes: []Probe{p("default/client", "prod/web", "tcp", 80, true)},
		}},
	},
	{
		Name:   "a host endpoint under deny-all keeps its failsafe ports (ssh) and forwarded traffic",
		Covers: []string{"host-endpoint", "failsafe", "vxlan"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h2-uplink, labels: {host: h2}}
spec:
  node: h2
  interfaceName: {{iface "h2"}}
  expectedIPs: ["{{hostip "h2"}}"]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-h2}
spec:
  selector: host == 'h2'
  types: [Ingress, Egress]
`,
			Probes: []Probe{
				p("host:h1", "host:h2", "tcp", 22, true),
				p("host:h1", "host:h2", "tcp", 9999, false),
				p("default/client", "prod/db", "tcp", 5432, true),
				p("host:h2", "host:h3", "tcp", 9999, false),
			},
		}},
	},
	{
		Name:   "applyOnForward on an all-interfaces host endpoint polices forwarded (VXLAN) traffic",
		Covers: []string{"applyOnForward", "all-interfaces", "vxlan", "host-endpoint"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h2-all, labels: {host: h2-all}}
spec:
  node: h2
  interfaceName: "*"
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward-no-80}
spec:
  selector: host == 'h2-all'
  applyOnForward: true
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [80]}
  - action: Allow
  egress: [{action: Allow}]
`,
			Probes: []Probe{
				p("default/client", "prod/db", "tcp", 80, false),
				p("default/client", "prod/db", "tcp", 443, true),
				p("default/client", "default/other", "tcp", 80, false),
				p("prod/web", "prod/api", "tcp", 80, true),
			},
		}},
	},
	{
		Name:   "preDNAT: a host port refused to one source before DNAT",
		Covers: []string{"preDNAT", "host-endpoint", "nets"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h2-uplink, labels: {host: h2}}
spec:
  node: h2
  interfaceName: {{iface "h2"}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: h2-allow}
spec:
  selector: host == 'h2'
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: h2-prednat}
spec:
  selector: host == 'h2'
  preDNAT: true
  applyOnForward: true
  ingress:
  - action: Deny
    protocol: TCP
    source: {nets: ["{{hostcidr "h1"}}"]}
    destination: {ports: [9999]}
`,
			Probes: []Probe{
				p("host:h1", "host:h2", "tcp", 9999, false),
				p("host:h3", "host:h2", "tcp", 9999, true),
				p("host:h1", "host:h2", "tcp", 22, true),
			},
		}},
	},
	{
		Name:   "doNotTrack: an untracked deny before connection tracking",
		Covers: []string{"doNotTrack", "host-endpoint"},
		Steps: []Step{{
			Apply: `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h2-uplink, labels: {host: h2}}
spec:
  node: h2
  interfaceName: {{iface "h2"}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: h2-allow}
spec:
  selector: host == 'h2'
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: h2-untracked}
spec:
  selector: host == 'h2'
  doNotTrack: true
  applyOnForward: true
  ingress:
  - action: Deny
    protocol: TCP
    source: {nets: ["{{hostcidr "h3"}}"]}
    destination: {ports: [9999]}
`,
			Probes: []Probe{
				p("host:h3", "host:h2", "tcp", 9999, false),
				p("host:h1", "host:h2", "tcp", 9999, true),
			},
		}},
	},
}
