package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

// TestOneLeaderPerTerm protects "one leader per term": replicas racing
// to lead get exactly one session; the term rises by one for it; the next
// replica leads only after the session ends, with a higher term; and a
// write under the deposed term is refused (see TestStaleTermWritesNothing
// for every kind of write).
func TestOneLeaderPerTerm(t *testing.T) {
	st := storetest.New(t)
	ctx := t.Context()
	before, err := st.CurrentTerm(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const replicas = 8
	var mu sync.Mutex
	var won []*store.LeaderSession
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := st.TryLead(ctx, fmt.Sprintf("replica-%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			if l != nil {
				mu.Lock()
				won = append(won, l)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("%d of %d racing replicas lead, want exactly 1", len(won), replicas)
	}
	first := won[0]
	if first.Term != before+1 {
		t.Fatalf("term %d after one takeover from %d", first.Term, before)
	}
	if l, err := st.TryLead(ctx, "late"); err != nil || l != nil {
		t.Fatalf("a second replica leads while the first holds the lock: %v %v", l, err)
	}
	first.Release()
	next, err := st.TryLead(context.Background(), "next")
	if err != nil || next == nil {
		t.Fatalf("no replica leads after the first released: %v", err)
	}
	defer next.Release()
	if next.Term != first.Term+1 {
		t.Fatalf("next term %d, want %d", next.Term, first.Term+1)
	}
	if _, err := st.JudgeNodes(ctx, first.Term); err == nil {
		t.Fatal("the deposed leader's term still writes")
	}
}
