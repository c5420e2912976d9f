package vxlan

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The legacy ethtool ioctls for the transmit checksum feature. The kernel
// maps them onto the feature bits (NETIF_F_CSUM_MASK), exactly as
// `ethtool -K dev tx off` does; no ethtool binary is needed.

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data member of the union.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // rest of the union
}

func ethtoolValueIoctl(iface string, cmd, data uint32) (uint32, error) {
	if len(iface) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", iface)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], iface)
	ifr.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// txChecksum reports whether transmit checksum offload is on. It acts in
// the calling thread's network namespace.
func txChecksum(iface string) (bool, error) {
	v, err := ethtoolValueIoctl(iface, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("ETHTOOL_GTXCSUM %s: %w", iface, err)
	}
	return v != 0, nil
}

// setTxChecksum switches transmit checksum offload on or off.
func setTxChecksum(iface string, on bool) error {
	var data uint32
	if on {
		data = 1
	}
	if _, err := ethtoolValueIoctl(iface, unix.ETHTOOL_STXCSUM, data); err != nil {
		return fmt.Errorf("ETHTOOL_STXCSUM %s: %w", iface, err)
	}
	return nil
}
