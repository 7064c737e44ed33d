package nodeagent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// guardLink is the agent's side of the fence guard protocol (guard.go):
// it finds the guard of its data directory, starting one when none runs,
// keeps it armed, and passes its fencing notices to the fence watcher.
type guardLink struct {
	sock  string
	log   *slog.Logger
	spawn func() error
	// fenced carries the guard's fencing notices.
	fenced chan guardMsg

	// mu guards the fields below.
	mu       sync.Mutex
	conn     net.Conn
	enc      *json.Encoder
	lastArm  time.Duration
	disarmed bool
	// up is closed at the first connection.
	up     chan struct{}
	upOnce sync.Once
}

func newGuardLink(dir string, log *slog.Logger, spawn func() error) *guardLink {
	return &guardLink{sock: filepath.Join(dir, fileGuardSock), log: log, spawn: spawn,
		fenced: make(chan guardMsg, 4), up: make(chan struct{})}
}

// spawnGuard returns a function that starts `exe guard --data-dir dir
// args...` detached from the agent (see guardSysProcAttr), its logs
// appended to logFile, or on the agent's standard error when empty.
func spawnGuard(dir string, args []string, logFile string, log *slog.Logger) func() error {
	return func() error {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.Command(exe, append([]string{"guard", "--data-dir", dir}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if logFile != "" {
			f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return fmt.Errorf("fence guard log: %w", err)
			}
			defer f.Close() // the child has its own copy
			cmd.Stdout, cmd.Stderr = f, f
		}
		cmd.SysProcAttr = guardSysProcAttr()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the fence guard: %w", err)
		}
		log.Info("fence guard process started", keyEvent, eventGuardSpawned, "pid", cmd.Process.Pid)
		// Reap it should it exit while this agent runs (another guard
		// held the lock, or it crashed: the next dial starts a new one).
		go func() { _ = cmd.Wait() }()
		return nil
	}
}

// run keeps a connection to the guard until ctx ends, starting the guard
// when none answers.
func (l *guardLink) run(ctx context.Context) {
	backoff := 20 * time.Millisecond
	spawnedAt := time.Time{}
	for ctx.Err() == nil {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", l.sock)
		if err != nil {
			// Start a guard unless one was started moments ago and may
			// still be coming up.
			if time.Since(spawnedAt) > 2*time.Second {
				if serr := l.spawn(); serr != nil {
					l.log.Error("NO FENCE GUARD: a dead or hung agent would leave this node's services running", keyEvent, eventGuardUnavailable, keyErr, serr)
				}
				spawnedAt = time.Now()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 20 * time.Millisecond
		l.mu.Lock()
		l.conn, l.enc, l.lastArm, l.disarmed = c, json.NewEncoder(c), 0, false
		l.mu.Unlock()
		l.upOnce.Do(func() { close(l.up) })
		l.log.Info("connected to the fence guard", keyEvent, eventGuardConnected)
		stop := context.AfterFunc(ctx, func() { c.Close() })
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var m guardMsg
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Fenced > 0 {
				select {
				case l.fenced <- m:
				case <-ctx.Done():
				}
			}
		}
		stop()
		c.Close()
		l.mu.Lock()
		l.conn, l.enc = nil, nil
		l.mu.Unlock()
		if ctx.Err() == nil {
			l.log.Warn("lost the fence guard; reconnecting", keyEvent, eventGuardUnavailable, keyErr, sc.Err())
		}
	}
}

// sendLocked writes m to the guard; a write that cannot finish quickly
// drops the connection (the reader then reconnects).
func (l *guardLink) sendLocked(m guardMsg) bool {
	if l.conn == nil {
		return false
	}
	_ = l.conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if err := l.enc.Encode(m); err != nil {
		l.conn.Close()
		l.conn, l.enc = nil, nil
		return false
	}
	return true
}

// arm grants the guard deadline d (CLOCK_BOOTTIME), which replaces the
// previous one (it may be earlier: a restart hold ends). A deadline
// within a millisecond of the last one sent is not sent again.
func (l *guardLink) arm(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.disarmed && d >= l.lastArm && d-l.lastArm < time.Millisecond {
		return
	}
	if l.sendLocked(guardMsg{ArmNS: int64(d)}) {
		l.lastArm, l.disarmed = d, false
	}
}

// disarm stops the guard from fencing (fencing policy none).
func (l *guardLink) disarm(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.disarmed {
		return
	}
	if l.sendLocked(guardMsg{Disarm: reason}) {
		l.disarmed, l.lastArm = true, 0
	}
}

// ack acknowledges the fencing notice seq.
func (l *guardLink) ack(seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sendLocked(guardMsg{AckFence: seq})
}

// connected tells whether the guard is connected now.
func (l *guardLink) connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn != nil
}
