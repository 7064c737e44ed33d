package testkit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeTB records Fatalf and ends the goroutine, as testing.T does.
type fakeTB struct{ msg string }

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls Eventually on its own goroutine and returns the failure, or "".
func run(d time.Duration, cond func() bool) string {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(f, d, "the thing", cond)
	}()
	<-done
	return f.msg
}

func TestEventually(t *testing.T) {
	n := 0
	if msg := run(time.Minute, func() bool { n++; return n == 3 }); msg != "" || n != 3 {
		t.Fatalf("a condition holding at the third call: %q after %d calls", msg, n)
	}
	if msg := run(30*time.Millisecond, func() bool { return false }); msg != "timed out after 30ms waiting for the thing" {
		t.Fatalf("never holding: %q", msg)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	err := Poll(t.Context(), time.Minute, "the thing", func() (bool, error) {
		n++
		if n < 3 {
			return false, errors.New("not yet")
		}
		return true, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("a condition holding at the third call: %v after %d calls", err, n)
	}
	boom := errors.New("boom")
	err = Poll(t.Context(), 30*time.Millisecond, "the thing", func() (bool, error) { return false, boom })
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "timed out after 30ms waiting for the thing") {
		t.Fatalf("never holding: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Poll(ctx, time.Minute, "the thing", func() (bool, error) { return false, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestSleep(t *testing.T) {
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestWaitTimeoutUnderCI(t *testing.T) {
	t.Setenv("GITHUB_ACTIONS", "")
	t.Setenv("CI", "")
	local := WaitTimeout()
	t.Setenv("CI", "true")
	if ci := WaitTimeout(); ci <= local {
		t.Fatalf("CI %v, local %v: CI must wait longer", ci, local)
	}
}
