package servertest

import (
	"bytes"
	"strings"
	"sync"
)

// logRing keeps the last lines written to it (one slog record a line), to
// show when a test fails: logging to t from the agents' goroutines would
// race with the end of the test.
type logRing struct {
	mu    sync.Mutex
	lines []string
	max   int
	part  []byte
}

func newLogRing(max int) *logRing { return &logRing{max: max} }

func (r *logRing) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.part = append(r.part, b...)
	for {
		i := bytes.IndexByte(r.part, '\n')
		if i < 0 {
			break
		}
		r.lines = append(r.lines, string(r.part[:i]))
		r.part = r.part[i+1:]
	}
	if over := len(r.lines) - r.max; over > 0 {
		r.lines = append(r.lines[:0], r.lines[over:]...)
	}
	return len(b), nil
}

func (r *logRing) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}
