package server

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAdmitShedsComfortableLeasesFirst: with every slot busy, a heartbeat
// of a node whose lease has more than half its TTL to run is refused at
// once, one of a node close to expiry (or unknown) waits for a slot and
// gets it when one frees up, and one of an agent that already gave up is
// not started. Shedding never touches a lease (it only delays a renewal
// that was not due), so it cannot make two copies; it keeps the nodes
// closest to lapsing renewed when the server is short of capacity.
func TestAdmitShedsComfortableLeasesFirst(t *testing.T) {
	ah := &agentHandlers{slots: make(chan struct{}, 1)}
	now := time.Now()
	ah.leases.note("fresh", now, time.Hour, []byte("a"))
	ah.leases.note("due", now.Add(-time.Hour), time.Second, []byte("a"))

	release, err := ah.admit(t.Context(), "fresh", nil)
	if err != nil {
		t.Fatalf("free slot refused: %v", err)
	}
	start := time.Now()
	asked := 0
	same := func() bool { asked++; return false }
	if _, err := ah.admit(t.Context(), "fresh", same); !errors.Is(err, errOverloaded) {
		t.Fatalf("comfortable lease, slots busy: %v, want overloaded", err)
	}
	if waited := time.Since(start); waited >= admitWait {
		t.Errorf("a comfortable lease waited %v before being refused", waited)
	}
	if asked != 1 {
		t.Errorf("news asked %d times for a comfortable lease with the slots busy, want once", asked)
	}
	if _, err := ah.admit(t.Context(), "due", nil); !errors.Is(err, errOverloaded) {
		t.Fatalf("slots busy throughout: %v, want overloaded after waiting", err)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := ah.admit(context.Background(), "unknown", nil)
		if err == nil {
			rel()
		}
		got <- err
	}()
	release() // a slot frees up while "unknown" waits
	if err := <-got; err != nil {
		t.Fatalf("a waiting heartbeat did not get the freed slot: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := ah.admit(ctx, "due", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("an abandoned request was admitted: %v", err)
	}
}

// TestAdmitKeepsNews: with every slot busy, a comfortable lease's
// heartbeat that says something new (its report's digest differs from
// the one its lease was last granted on here: a path gone down, a
// hierarchy's new state) waits for a slot like a lease close to expiry
// instead of being shed at once. Invariant: shedding never delays the
// evidence a failover waits for (a peer's report of a dead path) by more
// than the wait for a slot; a heartbeat that says nothing new is still
// shed first.
func TestAdmitKeepsNews(t *testing.T) {
	ah := &agentHandlers{slots: make(chan struct{}, 1)}
	ah.leases.note("n", time.Now(), time.Hour, []byte("paths up"))
	if !ah.leases.says("n", []byte("paths up")) || ah.leases.says("n", []byte("path 2 down")) || ah.leases.says("other", []byte("paths up")) {
		t.Fatal("says: wrong answer")
	}
	release, err := ah.admit(t.Context(), "n", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// The slot stays busy: news waits the whole admitWait for it (then
	// 503), where the same heartbeat without news is refused at once
	// (TestAdmitShedsComfortableLeasesFirst).
	start := time.Now()
	news := func() bool { return !ah.leases.says("n", []byte("path 2 down")) }
	if _, err := ah.admit(t.Context(), "n", news); !errors.Is(err, errOverloaded) {
		t.Fatalf("news, slots busy throughout: %v, want overloaded after waiting", err)
	}
	if waited := time.Since(start); waited < admitWait {
		t.Fatalf("news was refused after %v, before waiting admitWait (%v) for a slot", waited, admitWait)
	}
}
