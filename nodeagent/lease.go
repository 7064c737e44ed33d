package nodeagent

import (
	"path/filepath"
	"sync"
	"time"
)

// lease tracks this node's lease as the agent sees it. The deadline is the
// send time of the newest acknowledged heartbeat plus the TTL of its
// answer. The server measures from when it received that heartbeat and
// adds a grace, so the agent's deadline always passes first. Times come
// from time.Now and are compared with their monotonic readings only: a
// wall-clock step changes nothing.
type lease struct {
	now func() time.Time
	// mu guards the fields below.
	mu       sync.Mutex
	deadline time.Time // zero: no lease known
	lastAck  time.Time // send time of the newest acknowledged heartbeat
	expired  bool      // the deadline passed and no answer renewed it since
}

func newLease(now func() time.Time) *lease {
	if now == nil {
		now = time.Now
	}
	return &lease{now: now}
}

// renew records an acknowledged heartbeat sent at sentAt. The answer to
// the newest heartbeat sets the deadline, even when that is earlier than
// the one before: the control plane's lease follows the newest heartbeat
// it received, so a restart hold (a long TTL) ends with the next ordinary
// heartbeat on both sides. Answers to older heartbeats, arriving out of
// order, change nothing. It returns whether the lease had expired before
// this answer.
func (l *lease) renew(sentAt time.Time, ttl time.Duration) (wasExpired bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sentAt.After(l.lastAck) {
		l.lastAck = sentAt
		l.deadline = sentAt.Add(ttl)
	}
	wasExpired = l.expired
	if l.now().Before(l.deadline) {
		l.expired = false
	}
	return wasExpired
}

// remaining returns the time left on the lease (negative once it has
// passed) and whether a lease is known at all.
func (l *lease) remaining() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.deadline.IsZero() {
		return 0, false
	}
	return l.deadline.Sub(l.now()), true
}

// markExpired records that the expiry was noticed; it returns true the
// first time per expiry, so that it is logged once.
func (l *lease) markExpired() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.expired {
		return false
	}
	l.expired = true
	return true
}

// lastAckTime returns the send time of the newest acknowledged heartbeat
// (zero when none was).
func (l *lease) lastAckTime() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastAck
}

// sinceAck returns the time since the newest acknowledged heartbeat was
// sent (0 when none was).
func (l *lease) sinceAck() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastAck.IsZero() {
		return 0
	}
	return l.now().Sub(l.lastAck)
}

// leaseFile keeps the deadline over a clean agent restart, in a clock that
// counts from boot (see bootClock), never in wall-clock time.
type leaseFile struct {
	BootID     string `json:"boot_id"`
	DeadlineNS int64  `json:"deadline_boottime_ns"`
}

// save writes the deadline to dir so that the next agent process, if
// started within the lease, does not consider it lost.
func (l *lease) save(dir string) error {
	rem, ok := l.remaining()
	boot, id, bok := bootClock()
	if !ok || !bok {
		return nil
	}
	return saveJSON(filepath.Join(dir, fileLease), leaseFile{BootID: id, DeadlineNS: int64(boot + rem)})
}

// restore sets the deadline from a lease saved by the previous agent
// process of this boot. Without one, the lease counts as expired now: an
// agent that crashed, or was down for long, cannot know whether the
// control plane still counts on it.
func (l *lease) restore(dir string) (time.Duration, bool) {
	var f leaseFile
	ok, err := loadJSON(filepath.Join(dir, fileLease), &f)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = now
	if err != nil || !ok {
		return 0, false
	}
	boot, id, bok := bootClock()
	if !bok || id != f.BootID {
		return 0, false
	}
	rem := time.Duration(f.DeadlineNS) - boot
	if rem <= 0 {
		return rem, true
	}
	l.deadline = now.Add(rem)
	return rem, true
}
