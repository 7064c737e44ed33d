package nodeagent

import (
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

func TestLeaseCountsFromSendTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLease(nil)
		if _, ok := l.remaining(); ok {
			t.Fatal("a new lease is known")
		}
		sent := time.Now()
		time.Sleep(300 * time.Millisecond) // a slow answer
		if l.renew(sent, time.Second) {
			t.Fatal("reported expired before any lease")
		}
		if rem, _ := l.remaining(); rem != 700*time.Millisecond {
			t.Fatalf("remaining %v, want 700ms (the TTL counts from the send)", rem)
		}
		// An older answer arriving late never shortens the lease.
		l.renew(sent.Add(-time.Second), time.Second)
		if rem, _ := l.remaining(); rem != 700*time.Millisecond {
			t.Fatalf("remaining %v after a stale answer", rem)
		}
		time.Sleep(800 * time.Millisecond)
		rem, _ := l.remaining()
		if rem != -100*time.Millisecond {
			t.Fatalf("remaining %v", rem)
		}
		if !l.markExpired() || l.markExpired() {
			t.Fatal("markExpired must report the first time only")
		}
		if got := l.sinceAck(); got != 1100*time.Millisecond {
			t.Fatalf("since ack %v", got)
		}
		if !l.renew(time.Now(), time.Second) {
			t.Fatal("renewal after expiry not reported")
		}
		if rem, _ := l.remaining(); rem != time.Second {
			t.Fatalf("remaining after renewal %v", rem)
		}
	})
}

// TestLeaseHoldEndsWithTheNextHeartbeat protects "the agent's deadline
// passes first" across a restart hold: the server's lease follows the
// newest heartbeat it received, so after a hold (a long TTL) the next
// ordinary answer must shorten the agent's lease too; keeping the longer
// one would let the agent serve past the server's deadline.
func TestLeaseHoldEndsWithTheNextHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLease(nil)
		l.renew(time.Now(), 15*time.Second) // the restart hold
		time.Sleep(100 * time.Millisecond)
		l.renew(time.Now(), time.Second) // the next agent's first heartbeat
		if rem, _ := l.remaining(); rem != time.Second {
			t.Fatalf("remaining %v after the hold ended, want 1s", rem)
		}
	})
}

func TestLeaseSurvivesACleanRestart(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the boot clock is Linux only")
	}
	dir := t.TempDir()
	l := newLease(nil)
	l.renew(time.Now(), 5*time.Second)
	if err := l.save(dir); err != nil {
		t.Fatal(err)
	}
	l2 := newLease(nil)
	rem, ok := l2.restore(dir)
	if !ok || rem < 4*time.Second || rem > 5*time.Second {
		t.Fatalf("restored %v %v", rem, ok)
	}
	if r, _ := l2.remaining(); r < 4*time.Second {
		t.Fatalf("remaining %v", r)
	}

	// A lease that ran out while the agent was down, or none saved: the
	// new process starts expired.
	l3 := newLease(nil)
	l3.renew(time.Now().Add(-10*time.Second), time.Second)
	if err := l3.save(dir); err != nil {
		t.Fatal(err)
	}
	l4 := newLease(nil)
	if rem, ok := l4.restore(dir); !ok || rem > 0 {
		t.Fatalf("restored %v %v", rem, ok)
	}
	if r, ok := l4.remaining(); !ok || r > 0 {
		t.Fatalf("remaining %v %v", r, ok)
	}
	l5 := newLease(nil)
	if _, ok := l5.restore(t.TempDir()); ok {
		t.Fatal("restored from nothing")
	}
	if r, ok := l5.remaining(); !ok || r > 0 {
		t.Fatalf("without a saved lease: remaining %v %v, want expired", r, ok)
	}
}
