//go:build linux

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestAPILoadIsOpenLoop: while the server stalls, requests keep being
// sent on schedule, and each one's latency counts from when it was due.
// A closed loop would send nothing during the stall and report only the
// one slow request (coordinated omission); here every request the stall
// delayed reports it.
func TestAPILoadIsOpenLoop(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer reader" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if arrived.Add(1) == 20 {
			close(release) // the 20th arrival ends the stall
		}
		<-release
	}))
	defer srv.Close()
	l := &apiLoad{rate: 100, token: "reader", base: srv.URL, client: srv.Client(), targets: []apiTarget{{"/v1/clusters", "clusters"}}}
	res := l.run(context.Background(), time.Second)
	if res.sent != 100 || len(res.errs) != 0 {
		t.Fatalf("sent %d, errors %v; want 100 sent on schedule, none failed", res.sent, res.errs)
	}
	// The first request waited for the 20th to be sent, 190 ms later by
	// the schedule: the stall shows in the latencies of the requests it
	// held (the first fifth), so p99 and max reflect it.
	if res.max < 190*time.Millisecond || res.p99 < 150*time.Millisecond || res.p99By["clusters"] != res.p99 {
		t.Fatalf("max %v, p99 %v (by read %v): the stall of ≥190 ms is not in the latencies", res.max, res.p99, res.p99By)
	}
}
