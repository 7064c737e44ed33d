package failover

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/backstop-ha/backstop"
)

// fenceStore is the part of the store the fencer uses: nodes await a
// fence until a successful result is recorded.
type fenceStore struct {
	Store // unused methods panic
	// mu guards the fields below.
	mu       sync.Mutex
	awaiting map[string]bool
	results  []backstop.FenceResult
}

func (s *fenceStore) FenceJobs(context.Context) ([]backstop.FenceJob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backstop.FenceJob
	for _, id := range []string{"n1", "n2"} {
		if s.awaiting[id] {
			out = append(out, backstop.FenceJob{Device: backstop.FenceDevice{NodeID: id, Agent: "fence_test"}, NodeName: id, DownSince: time.Unix(1, 0)})
		}
	}
	return out, nil
}

func (s *fenceStore) RecordFence(_ context.Context, _ int64, r backstop.FenceResult) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, r)
	if r.OK {
		s.awaiting[r.NodeID] = false
	}
	return nil
}

// fakeFencer fails n1's first failures attempts; n2's device hangs until
// release is closed. It records when each attempt started and how many
// ran at once per node.
type fakeFencer struct {
	failures int
	release  chan struct{}
	// mu guards the fields below.
	mu       sync.Mutex
	started  map[string][]time.Duration
	running  map[string]int
	overlaps int
	t0       time.Time
}

func (f *fakeFencer) Fence(ctx context.Context, d backstop.FenceDevice) error {
	f.mu.Lock()
	f.started[d.NodeID] = append(f.started[d.NodeID], time.Since(f.t0))
	f.running[d.NodeID]++
	if f.running[d.NodeID] > 1 {
		f.overlaps++
	}
	n := len(f.started[d.NodeID])
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running[d.NodeID]--
		f.mu.Unlock()
	}()
	if d.NodeID == "n2" {
		select {
		case <-f.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if n <= f.failures {
		return errors.New("off: fence_test exited 1 (generic error)")
	}
	return nil
}

func awaitingStatus() []backstop.ClusterStatus {
	return []backstop.ClusterStatus{{Nodes: []backstop.NodeStatus{{ID: "n1", State: backstop.NodeDown, AwaitingFence: true},
		{ID: "n2", State: backstop.NodeDown, AwaitingFence: true}}}}
}

// One fence at a time per node, nodes in parallel, a hung device holds up
// neither the caller (the engine's pass) nor the other node's fence, and
// failures are retried after 1, 2, 4 s (doubling, capped at 30 s) until
// one succeeds; then the node's loop ends.
func TestFencerRetriesAndParallelism(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fenceStore{awaiting: map[string]bool{"n1": true, "n2": true}}
		f := &fakeFencer{failures: 3, release: make(chan struct{}), started: map[string][]time.Duration{}, running: map[string]int{}, t0: time.Now()}
		e := &Engine{Store: st, Fencer: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		for range 20 { // the engine's passes, every 500 ms
			if err := e.startFences(ctx, 1, awaitingStatus()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		synctest.Wait()
		f.mu.Lock()
		n1, n2, overlaps := f.started["n1"], f.started["n2"], f.overlaps
		f.mu.Unlock()
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}
		if len(n1) != len(want) {
			t.Fatalf("n1's attempts started at %v, want %v", n1, want)
		}
		for i := range want {
			if n1[i] != want[i] {
				t.Fatalf("n1's attempts started at %v, want %v", n1, want)
			}
		}
		if len(n2) != 1 || overlaps != 0 {
			t.Fatalf("n2's attempts: %v; overlapping fences of one node: %d", n2, overlaps)
		}
		st.mu.Lock()
		var ok, failed int
		for _, r := range st.results {
			if r.NodeID == "n1" && r.OK {
				ok++
			} else if r.NodeID == "n1" {
				failed++
			}
		}
		st.mu.Unlock()
		if ok != 1 || failed != 3 || e.fenceRunning("n1") {
			t.Fatalf("n1: %d successes, %d failures recorded, still fencing %v", ok, failed, e.fenceRunning("n1"))
		}
		close(f.release)
		synctest.Wait()
		if e.fenceRunning("n2") {
			t.Fatal("n2's fence loop did not end after its fence succeeded")
		}
	})
}

// The backoff is capped at 30 s.
func TestFencerBackoffCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fenceStore{awaiting: map[string]bool{"n1": true}}
		f := &fakeFencer{failures: 1 << 30, started: map[string][]time.Duration{}, running: map[string]int{}, t0: time.Now()}
		e := &Engine{Store: st, Fencer: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		ctx, cancel := context.WithCancel(t.Context())
		if err := e.startFences(ctx, 1, awaitingStatus()[:1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Minute)
		cancel()
		synctest.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		s := f.started["n1"]
		for i := 1; i < len(s); i++ {
			if gap := s[i] - s[i-1]; gap > fenceBackoffMax {
				t.Fatalf("attempts %v: gap %v over the cap", s, gap)
			}
		}
		if last := s[len(s)-1] - s[len(s)-2]; last != fenceBackoffMax {
			t.Fatalf("attempts %v: the last gap is %v, want the 30 s cap", s, last)
		}
	})
}
