package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
)

const (
	tableObjects = "objects"
	indexID      = "id"
)

// record is one row of the objects table. ID is kind, namespace and name
// joined by NUL bytes, so that a prefix scan on "kind\x00" lists a kind and
// on "kind\x00namespace\x00" one namespace of it, both sorted by namespace
// then name (the radix tree iterates in byte order and NUL sorts first).
type record struct {
	ID     string
	Object Object
}

func newSchema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableObjects: {
			Name: tableObjects,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: {Name: indexID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			},
		},
	}}
}

func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(newSchema())
	if err != nil {
		// The schema is a constant: this cannot fail at run time.
		panic(fmt.Sprintf("state: invalid memdb schema: %v", err))
	}
	return db
}

func recordID(k Key) string { return k.Kind + "\x00" + k.Namespace + "\x00" + k.Name }

// listPrefix is the id prefix of a kind, or of one namespace of a kind.
func listPrefix(kind, namespace string) string {
	if namespace == "" {
		return kind + "\x00"
	}
	return kind + "\x00" + namespace + "\x00"
}

// maxKeyPart bounds each part of a key; Calico names are at most 253 bytes.
const maxKeyPart = 253

// ValidateKey checks that a key can be stored: kind and name set, no NUL
// bytes (they separate the parts of the index key), bounded lengths.
func ValidateKey(k Key) error {
	check := func(what, v string, required bool) error {
		switch {
		case v == "" && required:
			return fmt.Errorf("%w: empty %s", ErrInvalid, what)
		case len(v) > maxKeyPart:
			return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, maxKeyPart)
		case strings.ContainsRune(v, 0):
			return fmt.Errorf("%w: %s %q contains a NUL byte", ErrInvalid, what, v)
		}
		return nil
	}
	if err := check("kind", k.Kind, true); err != nil {
		return err
	}
	if err := check("namespace", k.Namespace, false); err != nil {
		return err
	}
	return check("name", k.Name, true)
}

// newUID derives an object's UID from the raft index that created it and
// its key: identical on every replica, unique across the cluster's history.
// It is formatted as an RFC 9562 version 8 (custom) UUID.
func newUID(index uint64, k Key) string {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], index)
	h.Write(b[:])
	h.Write([]byte(recordID(k)))
	sum := h.Sum(nil)
	sum[6] = (sum[6] & 0x0f) | 0x80 // version 8
	sum[8] = (sum[8] & 0x3f) | 0x80 // RFC variant
	var s [36]byte
	hex.Encode(s[0:8], sum[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], sum[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], sum[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], sum[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], sum[10:16])
	return string(s[:])
}

// cloneObject copies an object so that callers cannot alter stored values.
func cloneObject(o Object) Object {
	if o.Value != nil {
		o.Value = append([]byte(nil), o.Value...)
	}
	return o
}
