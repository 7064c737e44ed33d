package server_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// latencies collects per-request durations across goroutines and reports
// p50/p99 and throughput next to Go's ns/op.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	pct := func(p float64) float64 {
		return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "req/s")
}

// BenchmarkGetHierarchy: GET of a 3-resource hierarchy through the whole
// stack (auth, contract validation, PostgreSQL), 4 concurrent clients.
func BenchmarkGetHierarchy(b *testing.B) {
	e := newEnv(b, 1)
	cid, nodes := clusterWithNodes(e, 3)
	resp, body := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", mailSpec("mail", nodes))
	if resp.StatusCode != 201 {
		b.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	path := resp.Header.Get("Location")
	var lat latencies
	b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
			resp, body := e.do("GET", path, nil)
			if resp.StatusCode != 200 {
				b.Errorf("get: %d %s", resp.StatusCode, body)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	lat.report(b, time.Since(start))
}

// BenchmarkCreateHierarchy: POST of a 3-resource, 3-priority hierarchy
// (validation, one transaction with row locks, priorities and audit).
func BenchmarkCreateHierarchy(b *testing.B) {
	e := newEnv(b, 1)
	cid, nodes := clusterWithNodes(e, 3)
	var n atomic.Int64
	var lat latencies
	b.SetParallelism(2)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			spec := mailSpec(fmt.Sprintf("h%d", n.Add(1)), nodes)
			t0 := time.Now()
			resp, body := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", spec)
			if resp.StatusCode != 201 {
				b.Errorf("create: %d %s", resp.StatusCode, body)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	lat.report(b, time.Since(start))
}
