// Package testkit is the test support every package's tests share: waiting
// for a condition with a bound that suits the machine (Eventually, Poll,
// WaitTimeout) and sleeping under a context (Sleep).
//
// It is test-only code: tests of any package import it, and so do the e2e
// tools (nslab, failbench); no production binary may
// (TestBinariesDoNotLinkTestkit). It does not import testing itself, so a
// tool linking it does not link testing either: Eventually takes the part
// of testing.TB it uses.
//
// Wait on a signal (a channel the fake closes) when the code under test
// can give one, as River's elector tests do; poll with Eventually when the
// condition is only observable from outside (a file, a socket, another
// process). A bound is a guard against hanging, never a claim about speed:
// timing belongs in benchmarks and log lines.
package testkit

import (
	"context"
	"fmt"
	"os"
	"time"
)

// WaitTimeout is the default bound for a wait on something that should
// happen soon: 10 s, or 30 s under CI (CI or GITHUB_ACTIONS set), where
// shared runners are slower. It is generous on purpose: it only decides
// how long a broken test takes to fail, and a tight bound fails a correct
// test on a loaded machine. River's WaitOrTimeout does the same (3 s, 10 s
// on GitHub Actions).
func WaitTimeout() time.Duration {
	if ci() {
		return 30 * time.Second
	}
	return 10 * time.Second
}

func ci() bool {
	return os.Getenv("CI") != "" || os.Getenv("GITHUB_ACTIONS") == "true"
}

// TB is the part of testing.TB that Eventually needs; *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually polls cond until it holds, and fails t with Fatalf when d
// passes first; d 0 means WaitTimeout(). Call it from the test's own
// goroutine only: Fatalf ends the goroutine that calls it, and from any
// other goroutine the test would carry on (or hang) instead of failing.
// Off the test goroutine, use Poll and send its error back.
func Eventually(t TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if d == 0 {
		d = WaitTimeout()
	}
	end := time.Now().Add(d)
	for pause := firstPause; !cond(); pause = next(pause) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(pause)
	}
}

// Poll calls cond until it holds, d passes or ctx ends; d 0 means
// WaitTimeout(). An error from cond is retried, and the last one is part
// of the timeout's error. Unlike Eventually it returns the failure, so it
// suits any goroutine, and tools that are not tests.
func Poll(ctx context.Context, d time.Duration, what string, cond func() (bool, error)) error {
	if d == 0 {
		d = WaitTimeout()
	}
	end := time.Now().Add(d)
	var last error
	for pause := firstPause; ; pause = next(pause) {
		ok, err := cond()
		if ok && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(end) {
			if last != nil {
				return fmt.Errorf("timed out after %v waiting for %s (last error: %w)", d, what, last)
			}
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		if err := Sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// The pause between two polls starts short, so that a condition about to
// hold costs little, and grows to maxPause, so that a slow one does not
// hammer what it asks (often a server over HTTP).
const (
	firstPause = 10 * time.Millisecond
	maxPause   = 50 * time.Millisecond
)

func next(pause time.Duration) time.Duration {
	return min(2*pause, maxPause)
}

// Sleep waits d, or until ctx ends, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
