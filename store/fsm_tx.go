package store

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// tx is the Tx of one log entry: a memdb write transaction plus the
// bookkeeping that turns it into watch events once it commits.
type tx struct {
	txn        *memdb.Txn
	index      uint64
	now        time.Time
	validators map[string][]Validator
	// restricted is set for registered commands: they may not write the
	// store's reserved kinds.
	restricted bool

	// touched lists keys in first-touch order; before holds their state at
	// the start of the entry (nil: absent).
	touched []Key
	before  map[Key]*Object
	// failed is the first validator error: it aborts the entry even if the
	// handler ignores the error Put or Delete returned.
	failed error
}

var _ Tx = (*tx)(nil)

func newTx(txn *memdb.Txn, index uint64, now time.Time, validators map[string][]Validator, restricted bool) *tx {
	return &tx{
		txn:        txn,
		index:      index,
		now:        now,
		validators: validators,
		restricted: restricted,
		before:     map[Key]*Object{},
	}
}

func (t *tx) Now() time.Time { return t.now }
func (t *tx) Index() uint64  { return t.index }

func (t *tx) get(k Key) (Object, bool) {
	raw, err := t.txn.First(tableObjects, indexID, recordID(k))
	if err != nil || raw == nil {
		return Object{}, false
	}
	return raw.(*record).Object, true
}

func (t *tx) Get(k Key) (Object, bool) {
	o, ok := t.get(k)
	if !ok {
		return o, false
	}
	return cloneObject(o), true
}

func (t *tx) List(kind, namespace string) []Object {
	return listTxn(t.txn, kind, namespace)
}

func listTxn(txn *memdb.Txn, kind, namespace string) []Object {
	it, err := txn.Get(tableObjects, indexID+"_prefix", listPrefix(kind, namespace))
	if err != nil {
		return nil
	}
	var out []Object
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, cloneObject(raw.(*record).Object))
	}
	return out
}

func (t *tx) checkWritable(k Key) error {
	if err := ValidateKey(k); err != nil {
		return &KeyError{Key: k, Err: err}
	}
	if t.restricted && IsReservedKind(k.Kind) {
		return &KeyError{Key: k, Err: fmt.Errorf("%w: kind %q is private to the store", ErrNotAllowed, k.Kind)}
	}
	return nil
}

// remember records the state of k before the entry first touches it.
func (t *tx) remember(k Key, old *Object) {
	if _, seen := t.before[k]; seen {
		return
	}
	t.touched = append(t.touched, k)
	if old != nil {
		c := *old
		t.before[k] = &c
	} else {
		t.before[k] = nil
	}
}

// validate runs the kind's validators; they see the transaction as it is
// before this change.
func (t *tx) validate(k Key, old, new *Object) error {
	for _, v := range t.validators[k.Kind] {
		if err := callValidator(v, t, old, new); err != nil {
			if !isKeyError(err) {
				err = &KeyError{Key: k, Err: err}
			}
			if t.failed == nil {
				t.failed = err
			}
			return err
		}
	}
	return nil
}

func callValidator(v Validator, t *tx, old, new *Object) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("validator panicked: %v", r)
		}
	}()
	var oc, nc *Object
	if old != nil {
		c := cloneObject(*old)
		oc = &c
	}
	if new != nil {
		c := cloneObject(*new)
		nc = &c
	}
	return v(t, oc, nc)
}

func (t *tx) Put(k Key, value []byte) (Object, error) {
	if err := t.checkWritable(k); err != nil {
		return Object{}, err
	}
	return t.put(k, value)
}

func (t *tx) put(k Key, value []byte) (Object, error) {
	cur, exists := t.get(k)
	obj := Object{
		Key:            k,
		UID:            newUID(t.index, k),
		Revision:       t.index,
		CreateRevision: t.index,
		Created:        t.now,
		Value:          append([]byte(nil), value...),
	}
	var old *Object
	if exists {
		old = &cur
		obj.UID, obj.CreateRevision, obj.Created = cur.UID, cur.CreateRevision, cur.Created
	}
	if err := t.validate(k, old, &obj); err != nil {
		return Object{}, err
	}
	t.remember(k, old)
	if err := t.txn.Insert(tableObjects, &record{ID: recordID(k), Object: obj}); err != nil {
		return Object{}, &KeyError{Key: k, Err: fmt.Errorf("insert: %w", err)}
	}
	return cloneObject(obj), nil
}

func (t *tx) Delete(k Key) error {
	if err := t.checkWritable(k); err != nil {
		return err
	}
	_, err := t.delete(k)
	return err
}

func (t *tx) delete(k Key) (Object, error) {
	cur, exists := t.get(k)
	if !exists {
		return Object{}, &KeyError{Key: k, Err: ErrNotFound}
	}
	if err := t.validate(k, &cur, nil); err != nil {
		return Object{}, err
	}
	t.remember(k, &cur)
	if err := t.txn.Delete(tableObjects, &record{ID: recordID(k)}); err != nil {
		return Object{}, &KeyError{Key: k, Err: fmt.Errorf("delete: %w", err)}
	}
	return cloneObject(cur), nil
}

// applyOps runs the ops of a commandTxn in order; the first failure aborts.
func (t *tx) applyOps(ops []Op) ([]Object, error) {
	out := make([]Object, 0, len(ops))
	for _, op := range ops {
		if err := t.checkWritable(op.Key); err != nil {
			return nil, err
		}
		cur, exists := t.get(op.Key)
		conflict := func() error {
			return &KeyError{Key: op.Key, Err: fmt.Errorf("%w: expected revision %d, found %d", ErrConflict, op.Revision, cur.Revision)}
		}
		var (
			obj Object
			err error
		)
		switch op.Type {
		case OpCreate:
			if exists {
				return nil, &KeyError{Key: op.Key, Err: ErrExists}
			}
			obj, err = t.put(op.Key, op.Value)
		case OpUpdate:
			if !exists {
				return nil, &KeyError{Key: op.Key, Err: ErrNotFound}
			}
			if op.Revision != 0 && op.Revision != cur.Revision {
				return nil, conflict()
			}
			obj, err = t.put(op.Key, op.Value)
		case OpPut:
			if op.Revision != 0 && (!exists || op.Revision != cur.Revision) {
				return nil, conflict()
			}
			obj, err = t.put(op.Key, op.Value)
		case OpDelete:
			if !exists {
				return nil, &KeyError{Key: op.Key, Err: ErrNotFound}
			}
			if op.Revision != 0 && op.Revision != cur.Revision {
				return nil, conflict()
			}
			obj, err = t.delete(op.Key)
		default:
			return nil, &KeyError{Key: op.Key, Err: fmt.Errorf("%w: unknown op type %q", ErrInvalid, op.Type)}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// change is the net effect of an entry on one key.
type change struct {
	key    Key
	before *Object // nil: absent before
	after  *Object // nil: absent after
}

// changes returns the net effect per key, in first-touch order; keys that
// were created and deleted within the entry are left out.
func (t *tx) changes() []change {
	out := make([]change, 0, len(t.touched))
	for _, k := range t.touched {
		c := change{key: k, before: t.before[k]}
		if cur, ok := t.get(k); ok {
			c.after = &cur
		}
		if c.before == nil && c.after == nil {
			continue
		}
		out = append(out, c)
	}
	return out
}
