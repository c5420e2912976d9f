// Package nlutil holds small netlink helpers shared by the drivers.
package nlutil

import (
	"errors"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Dump runs a netlink dump, repeating it when the kernel reports it was
// interrupted by a concurrent change, so no decision is taken on a partial
// view. After five interrupted attempts the error is returned.
func Dump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// IsLinkNotFound reports whether err says the interface does not exist.
func IsLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
