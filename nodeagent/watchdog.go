package nodeagent

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// watchdog keeps a Linux watchdog device (/dev/watchdog, e.g. softdog)
// fed while the agent is healthy, so that a hung agent gets the node
// rebooted: a node whose agent cannot fence must not keep serving.
type watchdog struct {
	// mu guards w.
	mu sync.Mutex
	w  io.WriteCloser
}

func openWatchdog(path string) (*watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	return &watchdog{w: f}, nil
}

// kick writes a keepalive.
func (w *watchdog) kick() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return nil
	}
	_, err := w.w.Write([]byte{'k'})
	return err
}

// close closes the device. With disarm it writes the magic 'V' first,
// which disarms drivers that allow it, so that a clean shutdown does not
// reboot the node; without, the watchdog keeps counting down.
func (w *watchdog) close(disarm bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return nil
	}
	var err error
	if disarm {
		_, err = w.w.Write([]byte{'V'})
	}
	if cerr := w.w.Close(); err == nil {
		err = cerr
	}
	w.w = nil
	return err
}

// liveness tracks the agent's loops: each beats at every iteration, and the
// watchdog is fed only while every loop beat recently enough.
type liveness struct {
	now func() time.Time
	// mu guards the maps.
	mu    sync.Mutex
	last  map[string]time.Time
	limit map[string]time.Duration
}

func newLiveness(now func() time.Time) *liveness {
	return &liveness{now: now, last: map[string]time.Time{}, limit: map[string]time.Duration{}}
}

// register adds a loop that must beat at least every limit.
func (l *liveness) register(name string, limit time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last[name] = l.now()
	l.limit[name] = limit
}

func (l *liveness) beat(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.limit[name]; ok {
		l.last[name] = l.now()
	}
}

// stale returns the loops that did not beat within their limit, sorted.
func (l *liveness) stale() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []string
	for name, t := range l.last {
		if now.Sub(t) > l.limit[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
