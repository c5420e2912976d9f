package wireguard

import (
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/dataplane"
)

// Status is the device as it is now, for `weft node status`.
type Status struct {
	Interface string
	Kind      Kind
	// DevicePID is the userspace device process (0 for the kernel's).
	DevicePID int
	// DeviceBinary is the binary the device process runs, and
	// DeviceBinaryReplaced whether it was replaced (upgraded) since.
	DeviceBinary         string
	DeviceBinaryReplaced bool
	PublicKey            string
	ListenPort           int
	FirewallMark         int
	MTU                  int
	Addresses            []string
	Peers                []PeerStatus
	// Blocked are the nodes not reached (wireguard.require).
	Blocked []string
	// Problem is the last pass's error, "" when the device is as desired.
	Problem string
}

// PeerStatus is one peer of the device.
type PeerStatus struct {
	// Node is the peer's node ("" for a peer weft does not know).
	Node                string
	PublicKey           string
	Endpoint            string
	AllowedIPs          []string
	LatestHandshake     time.Time
	ReceiveBytes        int64
	TransmitBytes       int64
	PersistentKeepalive time.Duration
}

// Status reads the device (from any goroutine). It returns nil when no
// device is desired and none exists.
func (m *Manager) Status() *Status {
	m.mu.Lock()
	nodes, blocked, problem, pid := m.nodes, m.blocked, m.problem, m.devicePID
	m.mu.Unlock()
	st := &Status{Interface: m.cfg.Name, Blocked: blocked}
	if problem != nil {
		st.Problem = problem.Error()
	}
	var dev *wgtypes.Device
	err := m.ns.Do(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		dev, err = c.Device(m.cfg.Name)
		return err
	})
	if err != nil || dev == nil {
		if nodes == nil && problem == nil {
			return nil
		}
		return st
	}
	st.Kind = KindKernel
	if dev.Type == wgtypes.Userspace {
		st.Kind = KindUserspace
		if pid == 0 {
			pid, _ = peerPID(m.cfg.Name)
		}
		st.DevicePID = pid
		if pid > 0 {
			st.DeviceBinary, st.DeviceBinaryReplaced = processBinary(pid)
		}
	}
	st.PublicKey = dev.PublicKey.String()
	st.ListenPort, st.FirewallMark = dev.ListenPort, dev.FirewallMark
	if h, err := m.ns.Netlink(); err == nil {
		if l, err := h.LinkByName(m.cfg.Name); err == nil {
			st.MTU = l.Attrs().MTU
			as, _ := h.AddrList(l, 0)
			for _, a := range as {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.IsLinkLocalUnicast() {
					ones, _ := a.Mask.Size()
					st.Addresses = append(st.Addresses, netip.PrefixFrom(ip.Unmap(), ones).String())
				}
			}
		}
		h.Close()
	}
	for _, p := range dev.Peers {
		ps := PeerStatus{
			Node: nodes[dataplane.WireGuardKey(p.PublicKey)], PublicKey: p.PublicKey.String(),
			LatestHandshake: p.LastHandshakeTime, ReceiveBytes: p.ReceiveBytes, TransmitBytes: p.TransmitBytes,
			PersistentKeepalive: p.PersistentKeepaliveInterval,
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			if pfx, ok := prefixOf(a); ok {
				ps.AllowedIPs = append(ps.AllowedIPs, pfx.String())
			}
		}
		sort.Strings(ps.AllowedIPs)
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool {
		a, b := st.Peers[i], st.Peers[j]
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.PublicKey < b.PublicKey
	})
	return st
}

// Metrics of the device, named as Calico's (felix/wireguard/metrics_linux.go)
// with weft's prefix; read from the device at every scrape.
var (
	descMeta = prometheus.NewDesc("weft_wireguard_meta",
		"The WireGuard device (always 1 while it exists), with its key, port, mark and kind.",
		[]string{"hostname", "iface", "public_key", "listen_port", "firewall_mark", "kind"}, nil)
	peerLabels = []string{"hostname", "public_key", "peer_key", "peer_endpoint", "peer_node"}
	descSent   = prometheus.NewDesc("weft_wireguard_bytes_sent",
		"Bytes sent to a peer (its transfer counter on the device).", peerLabels, nil)
	descRcvd = prometheus.NewDesc("weft_wireguard_bytes_rcvd",
		"Bytes received from a peer (its transfer counter on the device).", peerLabels, nil)
	descHandshake = prometheus.NewDesc("weft_wireguard_latest_handshake_seconds",
		"Unix time of the latest handshake with a peer (0: none yet).", peerLabels, nil)
	descPeers = prometheus.NewDesc("weft_wireguard_peers",
		"Peers on the WireGuard device.", []string{"hostname"}, nil)
	descBlocked = prometheus.NewDesc("weft_wireguard_blocked_nodes",
		"Nodes not reached at all because wireguard.require is set and they have no usable WireGuard key (their traffic is dropped).",
		[]string{"hostname"}, nil)
)

// Collector returns the device's metrics collector; host labels them.
func (m *Manager) Collector(host string) prometheus.Collector { return collector{m: m, host: host} }

type collector struct {
	m    *Manager
	host string
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMeta, descSent, descRcvd, descHandshake, descPeers, descBlocked} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Status()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.GaugeValue, float64(len(st.Blocked)), c.host)
	if st.Kind == KindNone {
		return
	}
	ch <- prometheus.MustNewConstMetric(descMeta, prometheus.GaugeValue, 1, c.host, st.Interface, st.PublicKey,
		strconv.Itoa(st.ListenPort), strconv.Itoa(st.FirewallMark), string(st.Kind))
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(st.Peers)), c.host)
	for _, p := range st.Peers {
		labels := []string{c.host, st.PublicKey, p.PublicKey, p.Endpoint, p.Node}
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(p.TransmitBytes), labels...)
		ch <- prometheus.MustNewConstMetric(descRcvd, prometheus.CounterValue, float64(p.ReceiveBytes), labels...)
		hs := 0.0
		if !p.LatestHandshake.IsZero() {
			hs = float64(p.LatestHandshake.Unix())
		}
		ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, hs, labels...)
	}
}
