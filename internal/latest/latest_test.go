package latest

import "testing"

// Only the newest of several sends is delivered, and Send never blocks.
func TestOnlyTheNewestIsDelivered(t *testing.T) {
	b := New[int]()
	for i := 1; i <= 3; i++ {
		b.Send(i)
	}
	if got := <-b.C(); got != 3 {
		t.Fatalf("got %d, want 3", got)
	}
	select {
	case v := <-b.C():
		t.Fatalf("a second value %d was pending", v)
	default:
	}
}
