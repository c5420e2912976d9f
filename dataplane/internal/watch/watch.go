// Package watch delivers netlink link and route events from one network
// namespace.
package watch

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Links subscribes to link events in ns (netns.None() for the current
// namespace) and calls fn for each until ctx ends (returns nil) or the
// subscription fails (returns the error; events may have been lost, so the
// caller should resync).
func Links(ctx context.Context, ns netns.NsHandle, fn func(netlink.LinkUpdate)) error {
	return run(ctx, "link", fn, func(ch chan netlink.LinkUpdate, done chan struct{}, cb func(error)) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			Namespace: &ns, ReceiveBufferSize: 1 << 20, ErrorCallback: cb,
		})
	})
}

// Routes is Links for route events.
func Routes(ctx context.Context, ns netns.NsHandle, fn func(netlink.RouteUpdate)) error {
	return run(ctx, "route", fn, func(ch chan netlink.RouteUpdate, done chan struct{}, cb func(error)) error {
		return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			Namespace: &ns, ReceiveBufferSize: 1 << 20, ErrorCallback: cb,
		})
	})
}

func run[T any](ctx context.Context, what string, fn func(T), subscribe func(chan T, chan struct{}, func(error)) error) error {
	ch := make(chan T, 64)
	done := make(chan struct{})
	errc := make(chan error, 1)
	cb := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	if err := subscribe(ch, done, cb); err != nil {
		return fmt.Errorf("subscribe to %s events: %w", what, err)
	}
	defer func() {
		close(done)
		for range ch { // let the library's reader goroutine finish
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("%s events: %w", what, err)
		case u, ok := <-ch:
			if !ok {
				select {
				case err := <-errc:
					return fmt.Errorf("%s events: %w", what, err)
				default:
					return fmt.Errorf("%s events: %w", what, errors.New("subscription closed"))
				}
			}
			fn(u)
		}
	}
}
