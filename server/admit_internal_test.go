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
	ah.leases.note("fresh", now, time.Hour)
	ah.leases.note("due", now.Add(-time.Hour), time.Second)

	release, err := ah.admit(t.Context(), "fresh")
	if err != nil {
		t.Fatalf("free slot refused: %v", err)
	}
	start := time.Now()
	if _, err := ah.admit(t.Context(), "fresh"); !errors.Is(err, errOverloaded) {
		t.Fatalf("comfortable lease, slots busy: %v, want overloaded", err)
	}
	if waited := time.Since(start); waited >= admitWait {
		t.Errorf("a comfortable lease waited %v before being refused", waited)
	}
	if _, err := ah.admit(t.Context(), "due"); !errors.Is(err, errOverloaded) {
		t.Fatalf("slots busy throughout: %v, want overloaded after waiting", err)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := ah.admit(context.Background(), "unknown")
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
	if _, err := ah.admit(ctx, "due"); !errors.Is(err, context.Canceled) {
		t.Fatalf("an abandoned request was admitted: %v", err)
	}
}
