package failover

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/backstop-ha/backstop"
)

// passStore counts the engine's passes and answers what a test sets:
// which clusters exist and have a hierarchy under way, when the next
// lease runs out, and what the failure detector finds; it records which
// clusters each pass read.
type passStore struct {
	Store // unused methods panic
	// mu guards the fields below.
	mu       sync.Mutex
	passes   int
	clusters []string        // default: one, "c1"
	busy     map[string]bool // clusters with a hierarchy starting
	next     time.Duration   // 0: no lease runs
	judge    []backstop.NodeTransition
	judged   int        // JudgeNodes calls
	reads    [][]string // each ClusterStatuses call's ids (nil: all)
	failRead error
}

func (s *passStore) JudgeNodes(context.Context, int64) ([]backstop.NodeTransition, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.judged++
	trs := s.judge
	s.judge = nil
	return trs, nil
}

func (s *passStore) AdvanceMoves(context.Context, int64, backstop.Signer) (int, error) { return 0, nil }

func (s *passStore) FenceJobs(context.Context) ([]backstop.FenceJob, error) { return nil, nil }

func (s *passStore) LeaseOutlook(context.Context) (backstop.LeaseOutlook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.passes++
	return backstop.LeaseOutlook{Running: s.next > 0, Next: s.next, Lapsed: len(s.judge) > 0}, nil
}

func (s *passStore) ClusterStatuses(_ context.Context, ids []string) ([]backstop.ClusterStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads = append(s.reads, slices.Sorted(slices.Values(ids)))
	if ids == nil {
		s.reads[len(s.reads)-1] = nil
	}
	if err := s.failRead; err != nil {
		s.failRead = nil
		return nil, err
	}
	all := s.clusters
	if all == nil {
		all = []string{"c1"}
	}
	var out []backstop.ClusterStatus
	for _, id := range all {
		if ids != nil && !slices.Contains(ids, id) {
			continue
		}
		h := backstop.HierarchyStatus{}
		h.Placement.State = backstop.PlacementInService
		if s.busy[id] {
			h.Placement.State = backstop.PlacementStarting
		}
		st := backstop.ClusterStatus{Hierarchies: []backstop.HierarchyStatus{h}}
		st.Cluster.ID = id
		out = append(out, st)
	}
	return out, nil
}

func (s *passStore) set(busy bool, next time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy, s.next = map[string]bool{"c1": busy}, next
	return s.passes
}

func (s *passStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.passes
}

// lastRead returns the ids the last read asked for (nil: every
// cluster) and how many reads there were.
func (s *passStore) lastRead() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reads) == 0 {
		return nil, 0
	}
	return s.reads[len(s.reads)-1], len(s.reads)
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

// TestEngineReadsWhatChanged: a pass reads only the clusters that
// changed (an event heard in them, a node judged in them, something under
// way in them), every cluster after a Poke, an error, or FullEvery; it
// judges leases only when one ran out. Invariant: every decision is made
// from a fresh read of its cluster, and a cluster that changed is read
// at the next pass (a failover is never held up by the partial reads).
func TestEngineReadsWhatChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &passStore{clusters: []string{"c1", "c2", "c3"}}
		e := &Engine{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: 50 * time.Millisecond,
			Idle: 200 * time.Millisecond, FullEvery: 10 * time.Second}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Run(ctx, 1)
		}()
		// readsSince: the reads after the first n (nil: every cluster).
		mark := func() int {
			synctest.Wait()
			_, n := st.lastRead()
			return n
		}
		wantReads := func(what string, from int, want []string, atLeast int) {
			t.Helper()
			synctest.Wait()
			st.mu.Lock()
			got := slices.Clone(st.reads[from:])
			st.mu.Unlock()
			if len(got) < atLeast {
				t.Fatalf("%s: %d reads, want at least %d", what, len(got), atLeast)
			}
			for _, r := range got {
				if !slices.Equal(r, want) || (r == nil) != (want == nil) {
					t.Fatalf("%s: reads %q, want each %q (nil: every cluster)", what, got, want)
				}
			}
		}
		wantReads("first pass of a term", 0, nil, 1)

		// Settled, nothing changed: passes at the idle interval read
		// nothing and judge nothing.
		m := mark()
		time.Sleep(time.Second)
		wantReads("a second of idle passes", m, nil, 0)
		if n := mark(); n != m {
			t.Fatalf("idle passes read %d times", n-m)
		}
		if st.count() < 5 {
			t.Fatalf("passes in a second idle at 200 ms: %d", st.count())
		}
		st.mu.Lock()
		judged := st.judged
		st.mu.Unlock()
		if judged != 0 {
			t.Fatalf("JudgeNodes called %d times with no lease lapsed", judged)
		}

		// An event in c2: the next pass (at most Interval later) reads c2 only.
		m = mark()
		e.PokeCluster("c2")
		time.Sleep(60 * time.Millisecond)
		wantReads("poke c2", m, []string{"c2"}, 1)

		// A lapsed lease judged in c3: read in the same pass.
		m = mark()
		st.mu.Lock()
		st.judge = []backstop.NodeTransition{{ClusterID: "c3", NodeID: "n", From: backstop.NodeUp, To: backstop.NodeDown}}
		st.mu.Unlock()
		time.Sleep(250 * time.Millisecond)
		wantReads("a node judged in c3", m, []string{"c3"}, 1)

		// c1 under way: read at every pass until it settles.
		st.mu.Lock()
		st.busy = map[string]bool{"c1": true}
		st.mu.Unlock()
		m = mark()
		e.PokeCluster("c1")
		time.Sleep(160 * time.Millisecond)
		wantReads("c1 starting", m, []string{"c1"}, 3)
		m = mark()
		e.PokeCluster("c2")
		time.Sleep(60 * time.Millisecond)
		wantReads("c1 starting, event in c2", m, []string{"c1", "c2"}, 1)
		st.mu.Lock()
		st.busy = nil
		st.mu.Unlock()
		time.Sleep(60 * time.Millisecond)
		m = mark()
		time.Sleep(time.Second)
		wantReads("c1 settled", m, nil, 0)

		// Poke (an operator's change): every cluster.
		e.Poke()
		time.Sleep(60 * time.Millisecond)
		wantReads("poke", m, nil, 1)

		// A failed read: the next pass reads every cluster, so what the
		// failed one was asked to read is not lost.
		m = mark()
		st.mu.Lock()
		st.failRead = errors.New("connection lost")
		st.mu.Unlock()
		e.PokeCluster("c3")
		time.Sleep(120 * time.Millisecond)
		synctest.Wait()
		st.mu.Lock()
		got := slices.Clone(st.reads[m:])
		st.mu.Unlock()
		if len(got) != 2 || !slices.Equal(got[0], []string{"c3"}) || got[1] != nil {
			t.Fatalf("a failed read of c3, then: reads %q, want [c3] (failed) then every cluster (nil) at the short interval", got)
		}

		// FullEvery: every cluster again, with nothing changed.
		time.Sleep(2 * time.Second)
		m = mark()
		time.Sleep(10 * time.Second)
		wantReads("after FullEvery", m, nil, 1)
		cancel()
		<-done
	})
}
