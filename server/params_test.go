package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/openapi"
)

// TestWaitOutlivesWriteTimeout proves that an operation declaring a
// timeout_s (PUT maintenance?wait=true) gets its answer written past the
// server's write timeout: without extendWriteDeadline the connection
// closes with no response, as it did at 90 s for timeout_s=100.
func TestWaitOutlivesWriteTimeout(t *testing.T) {
	doc, err := openapi.Load()
	if err != nil {
		t.Fatal(err)
	}
	item := doc.Paths.Value("/v1/clusters/{cluster_id}/nodes/{node_id}/maintenance")
	if item == nil || item.Put == nil {
		t.Fatal("the contract has no PUT maintenance")
	}
	op := item.Put
	for _, extend := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if extend {
				extendWriteDeadline(w, op)
			}
			time.Sleep(300 * time.Millisecond) // the wait, past the write timeout
			_, _ = io.WriteString(w, "done")
		}))
		srv.Config.WriteTimeout = 100 * time.Millisecond
		srv.Start()
		resp, err := srv.Client().Get(srv.URL)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		srv.Close()
		switch {
		case extend && (err != nil || string(body) != "done"):
			t.Errorf("with the deadline extended: %q, %v; want the answer", body, err)
		case !extend && err == nil:
			t.Errorf("without the deadline extended the answer %q came through; the test proves nothing", body)
		}
	}
}
