package failover

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/backstop-ha/backstop"
)

// passStore counts the engine's passes and answers what a test sets:
// whether a hierarchy is under way, and when the next lease runs out.
type passStore struct {
	Store // unused methods panic
	// mu guards the fields below.
	mu     sync.Mutex
	passes int
	busy   bool
	next   time.Duration // 0: no lease runs
}

func (s *passStore) JudgeNodes(context.Context, int64) ([]backstop.NodeTransition, error) {
	return nil, nil
}

func (s *passStore) AdvanceMoves(context.Context, int64, backstop.Signer) (int, error) { return 0, nil }

func (s *passStore) FenceJobs(context.Context) ([]backstop.FenceJob, error) { return nil, nil }

func (s *passStore) NextLeaseExpiry(context.Context) (time.Duration, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next, s.next > 0, nil
}

func (s *passStore) ClusterStatuses(context.Context) ([]backstop.ClusterStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.passes++
	state := backstop.PlacementInService
	if s.busy {
		state = backstop.PlacementStarting
	}
	h := backstop.HierarchyStatus{}
	h.Placement.State = state
	return []backstop.ClusterStatus{{Hierarchies: []backstop.HierarchyStatus{h}}}, nil
}

func (s *passStore) set(busy bool, next time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy, s.next = busy, next
	return s.passes
}

func (s *passStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.passes
}

// TestEngineIdlesButDetectsAtOnce: with everything settled the engine
// does not reread the clusters at its short interval, but it still
// passes right after the next lease runs out (failure detection is not
// slowed by idling: invariant "a crash is detected when its lease
// expires"), when poked (an event was heard; but never more often than
// its short interval), and at the short interval while something is
// under way.
func TestEngineIdlesButDetectsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &passStore{}
		e := &Engine{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: 50 * time.Millisecond, Idle: 10 * time.Second}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Run(ctx, 1)
		}()
		synctest.Wait()
		if n := st.count(); n != 1 {
			t.Fatalf("passes at start: %d, want 1", n)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := st.count(); n != 1 {
			t.Fatalf("settled engine passed %d times in 5 s, want no pass before its 10 s idle interval", n-1)
		}

		// A poke: a pass at once.
		e.Poke()
		synctest.Wait()
		if n := st.count(); n != 2 {
			t.Fatalf("passes after a poke: %d, want 2", n)
		}

		// A lease running out in 300 ms: a pass right after it, idle or not.
		st.set(false, 300*time.Millisecond)
		e.Poke()
		synctest.Wait()
		before := st.set(false, 0)
		time.Sleep(310 * time.Millisecond)
		synctest.Wait()
		if n := st.count(); n != before+1 {
			t.Fatalf("passes in the 310 ms after a lease expiry was due: %d, want 1", n-before)
		}

		// A storm of pokes: passes still start at most once per
		// Interval (50 ms), never back to back.
		before = st.count()
		for range 20 {
			e.Poke()
			time.Sleep(5 * time.Millisecond)
		}
		synctest.Wait()
		if n := st.count() - before; n < 1 || n > 3 {
			t.Fatalf("passes during 100 ms of pokes every 5 ms: %d, want 2 (at most one per 50 ms)", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()

		// Under way: back to the short interval.
		st.set(true, 0)
		e.Poke()
		synctest.Wait()
		before = st.count()
		time.Sleep(120 * time.Millisecond)
		synctest.Wait()
		if n := st.count(); n-before != 2 {
			t.Fatalf("passes in 120 ms while a hierarchy starts: %d, want 2 (every 50 ms)", n-before)
		}
		cancel()
		<-done
	})
}
