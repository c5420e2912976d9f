package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/dataplane/wireguard"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/calcrun"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
	nodewg "github.com/weftnet/weft/node/wireguard"
)

// The WireGuard wiring: the keys (opened before anything starts, so a
// key file with wrong permissions stops the agent at once), the driver's
// configuration, the store writer and the status.

// wireguardDeviceLog is the device process's log in data_dir (it outlives
// the agent, so it cannot write to the agent's stderr).
const wireguardDeviceLog = "wireguard-device.log"

// openWireGuardKeys opens the node's key ring when WireGuard is on.
func (a *Agent) openWireGuardKeys() error {
	if !a.cfg.WireGuard.Enabled {
		return nil
	}
	keys, err := nodewg.OpenKeys(a.cfg.Node.DataDir)
	if err != nil {
		return err
	}
	a.wgKeys = keys
	return nil
}

// wireguardDriverConfig is the WireGuard driver's part of the dataplane
// configuration: the device process is this very binary.
func (a *Agent) wireguardDriverConfig() (wireguard.Config, error) {
	c := wireguard.Config{Name: a.cfg.WireGuard.Interface}
	if a.wgKeys == nil {
		return c, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return c, fmt.Errorf("finding this binary for the WireGuard device process: %w", err)
	}
	c.Keys = a.wgKeys
	var start wireguard.Starter = wireguard.ProcessStarter{
		Command: []string{exe, "wireguard", "device"},
		LogPath: filepath.Join(a.cfg.Node.DataDir, wireguardDeviceLog),
		Logger:  a.log.With("component", "wireguard"),
	}
	if os.Getenv("INVOCATION_ID") != "" {
		start = systemdStarter{start, a.log}
	}
	c.Start = start
	return c, nil
}

// systemdStarter warns that, under systemd, a device process the agent
// starts itself lives in weft.service's cgroup, where a restart of the
// unit kills it: weft-wireguard.service should have started it first.
type systemdStarter struct {
	wireguard.Starter
	log *slog.Logger
}

func (s systemdStarter) Start(name string) (*wireguard.Process, error) {
	s.log.Warn("starting the WireGuard device process from the agent: under systemd it then dies with `systemctl restart weft`; install and start weft-wireguard.service (make install does) to keep the tunnel across agent restarts", "component", "wireguard")
	return s.Starter.Start(name)
}

// wireguardCalcConfig is the calculation's [wireguard] configuration.
func (a *Agent) wireguardCalcConfig() calc.WireGuardConfig {
	w := a.cfg.WireGuard
	return calc.WireGuardConfig{
		Enabled: w.Enabled, Interface: w.Interface, ListenPort: w.ListenPort, Require: w.Require,
		HostEncryption: w.HostEncryption, PersistentKeepalive: w.PersistentKeepalive.Duration,
	}
}

// newWireGuardWriter builds the WireGuard store writer and registers its
// local API call.
func (a *Agent) newWireGuardWriter() *nodewg.Controller {
	c := nodewg.New(nodewg.Config{
		Node: a.cfg.Node.Name, NodeLabels: a.cfg.Node.Labels, Logger: a.log,
		RotationInterval: a.cfg.WireGuard.KeyRotationInterval.Duration,
	}, a.store, a.wgKeys, a.dp.WireGuard, a.dp.Loop)
	c.Register(a.api)
	return c
}

// tunnelSinks hands the calculation's tunnel needs to every store writer
// that acts on them.
type tunnelSinks []calcrun.TunnelSink

func (s tunnelSinks) Set(n calc.TunnelNeeds) {
	for _, sink := range s {
		sink.Set(n)
	}
}

// wireguardStatus is the device for `weft node status`.
func wireguardStatus(m *wireguard.Manager) *localapi.WireGuardStatus {
	st := m.Status()
	if st == nil {
		return nil
	}
	out := &localapi.WireGuardStatus{
		Interface: st.Interface, Kind: string(st.Kind), DevicePID: st.DevicePID,
		DeviceBinary: st.DeviceBinary, DeviceBinaryReplaced: st.DeviceBinaryReplaced,
		PublicKey: st.PublicKey, ListenPort: st.ListenPort, FirewallMark: st.FirewallMark, MTU: st.MTU,
		Addresses: st.Addresses, Blocked: st.Blocked, Problem: st.Problem,
		Peers: []localapi.WireGuardPeerStatus{},
	}
	for _, p := range st.Peers {
		ps := localapi.WireGuardPeerStatus{
			Node: p.Node, PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs,
			LatestHandshake: p.LatestHandshake, ReceiveBytes: p.ReceiveBytes, TransmitBytes: p.TransmitBytes,
		}
		if p.PersistentKeepalive > 0 {
			ps.PersistentKeepalive = p.PersistentKeepalive.String()
		}
		out.Peers = append(out.Peers, ps)
	}
	return out
}

// wireguardHealth is the WireGuard component of /readyz and `weft node
// status`: live and ready whatever the device does (a broken tunnel is
// reported, and fails closed; it is no reason to restart the agent).
func wireguardHealth(m *wireguard.Manager) localapi.ComponentStatus {
	cs := localapi.ComponentStatus{Name: "wireguard", State: localapi.StateRunning, Live: true, Ready: true}
	st := m.Status()
	switch {
	case st == nil:
		cs.Detail = "no device yet"
	case st.Problem != "":
		cs.Detail = st.Problem
	case st.Kind == wireguard.KindUserspace:
		cs.Detail = fmt.Sprintf("userspace device (process %d), %d peers", st.DevicePID, len(st.Peers))
	default:
		cs.Detail = fmt.Sprintf("%s device, %d peers", st.Kind, len(st.Peers))
	}
	return cs
}

// RunWireGuardDevice is `weft wireguard device`: the userspace device
// process (dataplane/wireguard.RunDevice) for the interface iface, or,
// given the agent's configuration (the weft-wireguard systemd unit), for
// its wireguard.interface when WireGuard is on and the kernel lacks it;
// otherwise it says why nothing is needed and returns. ready is called
// when the device is up or when nothing is to be done.
func RunWireGuardDevice(ctx context.Context, cfg *config.Config, iface string, log *slog.Logger, ready func()) error {
	if cfg != nil {
		switch {
		case !cfg.WireGuard.Enabled:
			log.Info("wireguard.enabled is false: no WireGuard device process is needed")
			ready()
			return nil
		case iface == "":
			iface = cfg.WireGuard.Interface
		}
		kernel, why, err := wireguard.KernelSupported()
		if err != nil {
			return err
		}
		if kernel {
			log.Info(why + ": the agent uses the kernel's device; no device process is needed")
			ready()
			return nil
		}
		log.Info(why + ": running the userspace device")
	}
	if iface == "" {
		return errors.New("wireguard device: give --interface or --config")
	}
	return wireguard.RunDevice(ctx, wireguard.DeviceConfig{Name: iface, Logger: log, Ready: ready})
}
