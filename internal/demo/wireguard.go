package demo

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/site"
)

// The demo's WireGuard part (`weft demo --wireguard`): the device as `wg
// show` prints it, read from its UAPI socket inside the host's own mount
// namespace (/proc/<agent pid>/root), and a capture on the underlay
// bridge's ports during the pings, summed up in one line.

// wgIface is the device name the demo's agents use (the default).
const wgIface = "weft.wg"

// wgShow reads the device of the agent pid's host and formats it as `wg
// show` does.
func wgShow(agentPID int) (string, error) {
	// /run, not /var/run: an absolute symlink would leave the process's root.
	path := fmt.Sprintf("/proc/%d/root/run/wireguard/%s.sock", agentPID, wgIface)
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("the WireGuard UAPI socket: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return "", err
	}
	var b strings.Builder
	type peer struct {
		key, endpoint string
		ips           []string
		handshake     int64
		rx, tx        int64
	}
	var (
		peers []*peer
		cur   *peer
	)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			break // the blank line ends the answer
		}
		switch k {
		case "private_key":
			if raw, err := hex.DecodeString(v); err == nil && len(raw) == 32 {
				pk := wgtypes.Key(raw).PublicKey()
				fmt.Fprintf(&b, "interface: %s\n  public key: %s\n  private key: (hidden)\n", wgIface, pk)
			}
		case "listen_port":
			fmt.Fprintf(&b, "  listening port: %s\n", v)
		case "fwmark":
			n, _ := strconv.Atoi(v)
			fmt.Fprintf(&b, "  fwmark: %#x\n", n)
		case "public_key":
			raw, _ := hex.DecodeString(v)
			if len(raw) == 32 {
				cur = &peer{key: wgtypes.Key(raw).String()}
				peers = append(peers, cur)
			}
		case "endpoint":
			if cur != nil {
				cur.endpoint = v
			}
		case "allowed_ip":
			if cur != nil {
				cur.ips = append(cur.ips, v)
			}
		case "last_handshake_time_sec":
			if cur != nil {
				cur.handshake, _ = strconv.ParseInt(v, 10, 64)
			}
		case "rx_bytes":
			if cur != nil {
				cur.rx, _ = strconv.ParseInt(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.tx, _ = strconv.ParseInt(v, 10, 64)
			}
		case "errno":
			if v != "0" {
				return "", fmt.Errorf("the WireGuard device answered errno %s", v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].endpoint < peers[j].endpoint })
	for _, p := range peers {
		fmt.Fprintf(&b, "\npeer: %s\n", p.key)
		if p.endpoint != "" {
			fmt.Fprintf(&b, "  endpoint: %s\n", p.endpoint)
		}
		fmt.Fprintf(&b, "  allowed ips: %s\n", strings.Join(p.ips, ", "))
		if p.handshake > 0 {
			fmt.Fprintf(&b, "  latest handshake: %s ago\n", time.Since(time.Unix(p.handshake, 0)).Truncate(time.Second))
		}
		fmt.Fprintf(&b, "  transfer: %d B received, %d B sent\n", p.rx, p.tx)
	}
	return b.String(), nil
}

// underlayCapture counts the IPv4 packets the hosts send into the site
// bridge (each counted once: as it enters from its host's port) while it
// runs.
type underlayCapture struct {
	pool   netip.Prefix
	fd     int
	done   chan struct{}
	stopFn func()

	mu                                      sync.Mutex
	total, wireguard, datastore, bgp, other int
	vxlan, clear                            int
	example, firstOther, firstForbidden     string
}

// startCapture opens a packet socket in the router's namespace.
func startCapture(router *site.Namespace, ports []string, pool netip.Prefix) (*underlayCapture, error) {
	c := &underlayCapture{pool: pool, fd: -1, done: make(chan struct{})}
	idx := map[int]bool{}
	err := router.Netlink(func(nl *netlink.Handle) error {
		for _, p := range ports {
			l, err := nl.LinkByName(p)
			if err != nil {
				return err
			}
			idx[l.Attrs().Index] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	err = router.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, fmt.Errorf("capture: packet socket: %w", err)
	}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 256)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
			if err != nil {
				continue // the timeout, to look at stop
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype == unix.PACKET_OUTGOING || !idx[ll.Ifindex] {
				continue
			}
			c.packet(buf[:min(n, len(buf))], n)
		}
	}()
	c.stopFn = func() { close(stop) }
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packet classifies one Ethernet frame of length size.
func (c *underlayCapture) packet(frame []byte, size int) {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
		return
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl+4 {
		return
	}
	proto := ip[9]
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	sport := binary.BigEndian.Uint16(ip[ihl : ihl+2])
	dport := binary.BigEndian.Uint16(ip[ihl+2 : ihl+4])
	desc := fmt.Sprintf("%s:%d > %s:%d", src, sport, dst, dport)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total++
	switch {
	case c.pool.Contains(src) || c.pool.Contains(dst):
		c.clear++
		if c.firstForbidden == "" {
			c.firstForbidden = fmt.Sprintf("%s proto %d (a workload address in clear)", desc, proto)
		}
	case proto == unix.IPPROTO_UDP && (sport == 4789 || dport == 4789):
		c.vxlan++
		if c.firstForbidden == "" {
			c.firstForbidden = desc + " udp (VXLAN)"
		}
	case proto == unix.IPPROTO_UDP && sport == 51820 && dport == 51820:
		c.wireguard++
		if c.example == "" {
			c.example = fmt.Sprintf("%s udp, %d bytes", desc, size-14)
		}
	case proto == unix.IPPROTO_TCP && (sport == clusterPort || dport == clusterPort):
		c.datastore++
	case proto == unix.IPPROTO_TCP && (sport == bgpPort || dport == bgpPort):
		// The hosts' own BGP sessions (the mesh, the site's router):
		// control traffic between host addresses, like the datastore's.
		c.bgp++
	default:
		c.other++
		if c.firstOther == "" {
			c.firstOther = fmt.Sprintf("%s proto %d", desc, proto)
		}
	}
}

// stop ends the capture and returns its one-line summary and whether the
// underlay carried nothing but WireGuard (and the hosts' control traffic:
// the datastore's TLS, BGP sessions).
func (c *underlayCapture) stop() (line, example string, onlyWireGuard bool) {
	c.stopFn()
	<-c.done
	unix.Close(c.fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	line = fmt.Sprintf("underlay capture (every host's port on the site bridge, during the pings): %d IPv4 packets: %d WireGuard (udp/51820), %d datastore (tcp/%d, TLS), %d BGP (tcp/%d), %d other; VXLAN: %d; workload addresses in clear: %d",
		c.total, c.wireguard, c.datastore, clusterPort, c.bgp, bgpPort, c.other, c.vxlan, c.clear)
	switch {
	case c.firstForbidden != "":
		example = "first offender: " + c.firstForbidden
	case c.firstOther != "":
		example = "e.g. " + c.example + "; first other: " + c.firstOther
	default:
		example = "e.g. " + c.example
	}
	return line, example, c.wireguard > 0 && c.vxlan == 0 && c.clear == 0 && c.other == 0
}
