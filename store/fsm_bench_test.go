package store

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkFSMApply measures applying one small put per log entry, as raft
// delivers them (batches of 64).
func BenchmarkFSMApply(b *testing.B) {
	f, err := newFSM(fsmOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	val := make([]byte, 100)
	logs := make([]*raft.Log, 0, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ops, _ := json.Marshal([]Op{{Type: OpPut, Key: Key{Kind: "Bench", Name: fmt.Sprintf("k%09d", i)}, Value: val}})
		data, _ := encodeEntry(newEntry(commandTxn, ops, false, time.Now()))
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
		if len(logs) == cap(logs) || i == b.N-1 {
			f.ApplyBatch(logs)
			logs = logs[:0]
		}
	}
}
