package resync

import (
	"errors"
	"testing"
)

func TestFlag(t *testing.T) {
	var f Flag
	reads := 0
	read := func() error { reads++; return nil }
	if err := f.Run(read); err != nil || reads != 0 {
		t.Fatalf("nothing asked: reads %d, %v", reads, err)
	}
	f.Queue()
	_ = f.Run(read)
	_ = f.Run(read)
	if reads != 1 {
		t.Fatalf("queued once: %d reads", reads)
	}
	f.Event()
	_ = f.Run(read)
	if reads != 2 {
		t.Fatalf("after an event: %d reads", reads)
	}
	boom := errors.New("boom")
	f.Queue()
	if err := f.Run(func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	_ = f.Run(read)
	if reads != 3 {
		t.Fatalf("a failed read must stay queued: %d reads", reads)
	}
}
