package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// StoreValue is the JSON the store keeps for a resource: the whole
// resource (apiVersion and kind included) without the fields the store
// owns (resourceVersion, uid, creationTimestamp), which FromStore puts
// back from the store's own record.
func StoreValue(r Resource) ([]byte, error) {
	c := withTypeMeta(r)
	m := c.GetMeta()
	// withTypeMeta copied the struct, so this Metadata is the copy's own.
	m.ResourceVersion, m.UID, m.CreationTimestamp = "", "", nil
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding %s for the store: %w", Describe(r), err)
	}
	return b, nil
}

// FromStore rebuilds a resource from a stored value and the store's record
// of it: uid, the revision of its last change (resourceVersion is its
// decimal form) and its creation time.
func FromStore(kind string, value []byte, uid string, revision uint64, created time.Time) (Resource, error) {
	r, err := New(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(value, r); err != nil {
		return nil, fmt.Errorf("decoding stored %s: %w", kind, err)
	}
	if tm := r.GetTypeMeta(); tm.Kind != kind {
		return nil, fmt.Errorf("stored value of kind %q under kind %s", tm.Kind, kind)
	}
	m := r.GetMeta()
	m.UID = uid
	m.ResourceVersion = FormatRevision(revision)
	if !created.IsZero() {
		// Kubernetes-style timestamps have whole seconds.
		t := created.UTC().Truncate(time.Second)
		m.CreationTimestamp = &t
	}
	return r, nil
}

// ParseRevision reads a resourceVersion. The empty string is revision 0
// ("no particular revision").
func ParseRevision(resourceVersion string) (uint64, error) {
	if resourceVersion == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(resourceVersion, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceVersion %q is not a revision (a decimal number)", resourceVersion)
	}
	return n, nil
}

// FormatRevision is the resourceVersion of a revision ("" for 0).
func FormatRevision(revision uint64) string {
	if revision == 0 {
		return ""
	}
	return strconv.FormatUint(revision, 10)
}

// DeepCopy returns an independent copy of a resource.
func DeepCopy(r Resource) Resource {
	c, err := New(r.Kind())
	if err != nil {
		panic(err) // r's own kind always exists
	}
	b, err := json.Marshal(r)
	if err == nil {
		err = json.Unmarshal(b, c)
	}
	if err != nil {
		panic(fmt.Sprintf("api: copying %s: %v", Describe(r), err)) // our types always round-trip
	}
	return c
}
