package wireguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// DefaultMTU is the device MTU before the manager sets the real one
// (wireguard-go's default: a 1500-byte underlay less 80).
const DefaultMTU = 1420

// DeviceConfig configures the userspace device process.
type DeviceConfig struct {
	// Name is the interface name.
	Name   string
	Logger *slog.Logger
	// Ready is called once the device and its UAPI socket exist (the
	// command tells systemd).
	Ready func()
}

// RunDevice is the userspace device process (`weft wireguard device`):
// wireguard-go on a TUN with its batching and offloads as they are, and
// the UAPI socket /var/run/wireguard/<name>.sock, through which the agent
// — any agent, this one or the next after a restart or an upgrade —
// configures it exactly as it configures the kernel's device. It holds no
// configuration of its own and decides nothing: it keeps the TUN, the UDP
// socket, the keys and the sessions alive while agents come and go, which
// is what makes an agent restart hitless.
//
// It runs until ctx ends (SIGTERM: the device and the socket are removed)
// or until the device closes (its interface was deleted). A lost UAPI
// socket (its file removed) is recreated: the device never stops for it.
func RunDevice(ctx context.Context, cfg DeviceConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkTUN(); err != nil {
		return err
	}
	tdev, err := tun.CreateTUN(cfg.Name, DefaultMTU)
	if err != nil {
		return fmt.Errorf("creating the TUN device %s: %w", cfg.Name, err)
	}
	name, err := tdev.Name()
	if err != nil {
		tdev.Close()
		return fmt.Errorf("TUN device name: %w", err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), wgLogger(log))
	defer dev.Close()

	uapiErr := make(chan error, 1)
	uapi, err := listenUAPI(name, dev, uapiErr)
	if err != nil {
		return err
	}
	defer func() { uapi.Close() }()
	log.Info("WireGuard device process running", "interface", name, "uapi", uapiPath(name), "pid", os.Getpid())
	if cfg.Ready != nil {
		cfg.Ready()
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: removing the WireGuard device", "interface", name)
			return nil
		case <-dev.Wait():
			log.Info("the WireGuard device closed (its interface was deleted); exiting", "interface", name)
			return nil
		case err := <-uapiErr:
			// The socket file was removed or the listener failed: make a
			// new one, keep the device.
			uapi.Close()
			for ctx.Err() == nil {
				log.Warn("the UAPI socket went away; recreating it", "err", err, "path", uapiPath(name))
				if uapi, err = listenUAPI(name, dev, uapiErr); err == nil {
					break
				}
				select {
				case <-ctx.Done():
				case <-dev.Wait():
					return nil
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// listenUAPI opens the UAPI socket and serves it; the first error of the
// listener goes to errc.
func listenUAPI(name string, dev *device.Device, errc chan<- error) (net.Listener, error) {
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("opening the UAPI socket %s: %w", uapiPath(name), err)
	}
	l, err := ipc.UAPIListen(name, f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("listening on the UAPI socket %s: %w", uapiPath(name), err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				select {
				case errc <- err:
				default:
				}
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	return l, nil
}

// UAPIDir is where wireguard-go and wgctrl keep the UAPI sockets. It is
// per filesystem, not per network namespace.
const UAPIDir = "/var/run/wireguard"

func uapiPath(name string) string { return UAPIDir + "/" + name + ".sock" }

// tunDevicePath is the TUN clone device (a variable for tests).
var tunDevicePath = "/dev/net/tun"

// checkTUN gives a missing /dev/net/tun one clear error.
func checkTUN() error {
	path := tunDevicePath
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist: the userspace WireGuard device needs the tun driver (modprobe tun; in a container, pass the device in)", path)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func wgLogger(log *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...), "component", "wireguard-go") },
		Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...), "component", "wireguard-go") },
	}
}

// KernelSupported reports whether the kernel of the current network
// namespace has WireGuard: it creates a scratch wireguard link and
// deletes it again. why says what was found.
func KernelSupported() (ok bool, why string, err error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, "", err
	}
	la := netlink.NewLinkAttrs()
	la.Name = "weftwgp" + hex.EncodeToString(b[:])
	err = netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
	switch {
	case err == nil:
		_ = netlink.LinkDel(&netlink.Wireguard{LinkAttrs: la})
		return true, "the kernel has WireGuard", nil
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EAFNOSUPPORT):
		return false, fmt.Sprintf("the kernel has no WireGuard: creating a wireguard link failed: %v", err), nil
	}
	return false, "", fmt.Errorf("probing for the kernel's WireGuard: %w", err)
}
