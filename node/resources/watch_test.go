package resources

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/weftnet/weft/node/localapi"
)

// A watch from the current revision answers at once, before any change: a
// client must know the watch is established before it writes (the headers
// used to wait in a buffer until the first event).
func TestWatchIsEstablishedBeforeTheFirstEvent(t *testing.T) {
	st := singleStore(t)
	svc := New(st, nil)
	mux := http.NewServeMux()
	svc.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := fmt.Sprintf("%s/v1/watch?kinds=GlobalNetworkSet&revision=%d", srv.URL, st.Revision())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no answer to a watch before the first change: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if _, err := svc.write(ctx, localapi.ModeApply, []byte(poolYAML)); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("watch ended: %v", sc.Err())
	}
	var ev localapi.WatchEvent
	if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Type != "PUT" {
		t.Fatalf("first event %s (%v), want the GlobalNetworkSet's PUT", sc.Bytes(), err)
	}
}
