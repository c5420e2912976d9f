package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/go-memdb"
)

// Snapshot format (raft snapshots and `weft snapshot save` files alike):
//
//	magic "WEFTSNAP"
//	frame: header JSON {"version":1,"revision":R,"objects":N}
//	N frames: Object JSON
//	32 bytes: SHA-256 of everything before it
//
// A frame is a uvarint length followed by that many bytes. The checksum
// catches truncated or damaged backup files before anything is replaced.
const (
	snapshotMagic   = "WEFTSNAP"
	snapshotVersion = 1
	// maxFrame bounds one object: far above the 1 MiB request limit.
	maxFrame = 64 << 20
)

// ErrBadSnapshot marks a snapshot that cannot be read.
var ErrBadSnapshot = errors.New("bad snapshot")

type snapshotHeader struct {
	Version  int    `json:"version"`
	Revision uint64 `json:"revision"`
	Objects  int    `json:"objects"`
}

func countObjects(txn *memdb.Txn) int {
	n := 0
	iterate(txn, "", func(Object) bool { n++; return true })
	return n
}

func writeSnapshot(w io.Writer, txn *memdb.Txn, rev uint64) error {
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 64<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	var lenBuf [binary.MaxVarintLen64]byte
	frame := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return err
		}
		_, err = bw.Write(b)
		return err
	}
	if err := frame(snapshotHeader{Version: snapshotVersion, Revision: rev, Objects: countObjects(txn)}); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	var werr error
	iterate(txn, "", func(o Object) bool {
		werr = frame(o)
		return werr == nil
	})
	if werr != nil {
		return fmt.Errorf("write snapshot object: %w", werr)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if _, err := w.Write(sum.Sum(nil)); err != nil {
		return fmt.Errorf("write snapshot checksum: %w", err)
	}
	return nil
}

// hashingReader feeds what it reads into a hash.
type hashingReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

func (hr *hashingReader) ReadByte() (byte, error) {
	b, err := hr.r.ReadByte()
	if err == nil {
		hr.h.Write([]byte{b})
	}
	return b, err
}

// decodeSnapshot reads a snapshot, calling fn for every object in key
// order, and returns its revision. It verifies the checksum at the end:
// callers must discard what fn built when it returns an error.
func decodeSnapshot(r io.Reader, fn func(Object) error) (uint64, error) {
	hr := &hashingReader{r: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil || string(magic) != snapshotMagic {
		return 0, fmt.Errorf("%w: not a weft snapshot", ErrBadSnapshot)
	}
	buf := make([]byte, 0, 4096)
	frame := func(v any) error {
		n, err := binary.ReadUvarint(hr)
		if err != nil {
			return fmt.Errorf("%w: truncated: %v", ErrBadSnapshot, err)
		}
		if n > maxFrame {
			return fmt.Errorf("%w: frame of %d bytes", ErrBadSnapshot, n)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(hr, buf); err != nil {
			return fmt.Errorf("%w: truncated: %v", ErrBadSnapshot, err)
		}
		if err := json.Unmarshal(buf, v); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		return nil
	}
	var hdr snapshotHeader
	if err := frame(&hdr); err != nil {
		return 0, err
	}
	if hdr.Version != snapshotVersion {
		return 0, fmt.Errorf("%w: unsupported version %d", ErrBadSnapshot, hdr.Version)
	}
	if hdr.Objects < 0 {
		return 0, fmt.Errorf("%w: negative object count", ErrBadSnapshot)
	}
	for i := 0; i < hdr.Objects; i++ {
		var o Object
		if err := frame(&o); err != nil {
			return 0, err
		}
		if err := fn(o); err != nil {
			return 0, err
		}
	}
	want := hr.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(hr.r, got); err != nil {
		return 0, fmt.Errorf("%w: missing checksum: %v", ErrBadSnapshot, err)
	}
	if !bytes.Equal(want, got) {
		return 0, fmt.Errorf("%w: checksum mismatch (damaged file?)", ErrBadSnapshot)
	}
	if _, err := hr.r.ReadByte(); err != io.EOF {
		return 0, fmt.Errorf("%w: trailing data after the checksum", ErrBadSnapshot)
	}
	return hdr.Revision, nil
}
