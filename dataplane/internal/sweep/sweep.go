// Package sweep is the removal phase the drivers that cache a kernel view
// share: delete what the kernel holds of weft's and no longer desired.
package sweep

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Undesired deletes, through del, every entry of actual (the driver's
// cached view of its kernel objects) that desired does not want, and drops
// it from actual. An object already gone (del failing with gone, e.g.
// ESRCH or ENOENT) counts as deleted; a real write adds to writes. Failed
// deletions stay in actual for the next pass; their errors are joined.
func Undesired[K comparable, V any](actual map[K]V, desired func(K) bool, del func(K, V) error, gone error, writes *atomic.Uint64) error {
	var errs []error
	for k, v := range actual {
		if desired(k) {
			continue
		}
		err := del(k, v)
		if err != nil && !errors.Is(err, gone) {
			errs = append(errs, fmt.Errorf("remove %v: %w", k, err))
			continue
		}
		if err == nil {
			writes.Add(1)
		}
		delete(actual, k)
	}
	return errors.Join(errs...)
}
