package nodeagent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/client"
)

// The fence guard is the node-local half of "fencing that needs no live
// agent" (the design brief's safety rule 6). It is a small process of its
// own (backstop-agent guard), started by the agent in a session of its
// own so that it outlives the agent: SIGKILL, OOM kill, SIGSTOP, a crash
// loop or a stop of the agent leave it running.
//
// The agent arms it with a deadline on CLOCK_BOOTTIME (a clock every
// process of the node shares, unaffected by wall-clock steps):
//
//   - while the lease is valid, the lease deadline (send time of the newest
//     acknowledged heartbeat plus its TTL), which passes before the control
//     plane's own (receipt plus TTL plus grace);
//   - while the lease has run out but a majority of the cluster is visible
//     over the paths (the control plane then finds the node unreachable,
//     not down), a short vouch: now plus what the peers need to notice
//     that this node's path heartbeats stopped. An agent that hangs stops
//     vouching and its path heartbeats stop with it, so the vouch runs out
//     before a peer can report the node unseen.
//
// When the deadline passes without a newer one, the guard fences every
// active hierarchy recorded in hierarchies.json with the kits' Fence (the
// same fast kill the agent uses: SIGKILL the services, delete the
// addresses, force-unmount the volumes), then tells the connected agent.
// An agent that acknowledges within AckTimeout fences again itself (so its
// in-memory state agrees) and reports the fencing; one that does not is
// hung or half dead and is SIGKILLed, and the guard records the fencing
// in the data directory for the next agent process to report.
//
// The guard runs with a real-time scheduling priority and its memory
// locked (as SBD does), so that a CPU hog or memory pressure on the node
// cannot delay it past the control plane's deadline.
const (
	fileGuardSock = "guard.sock" // the guard's Unix socket
	fileGuardLock = "guard.lock" // flock: one guard per data directory
)

// GuardConfig configures the fence guard.
type GuardConfig struct {
	// DataDir is the agent's data directory.
	DataDir string
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
	// AckTimeout is how long a connected agent has to acknowledge a
	// fencing before the guard kills it.
	AckTimeout time.Duration
	// Realtime asks for a real-time scheduling priority and locked
	// memory (best effort: refused without the privilege).
	Realtime bool
	// Watchdog is a watchdog device (/dev/watchdog) the guard feeds every
	// WatchdogKick while it runs and its fencings succeed: a guard that
	// hangs or dies, or cannot fence, gets the node rebooted by the
	// kernel. Empty: none. Never point it at a real device on a test
	// machine: a missed keepalive reboots it.
	Watchdog     string
	WatchdogKick time.Duration
}

// guardMsg is one message of the guard protocol: JSON, one per line.
type guardMsg struct {
	// agent → guard
	ArmNS    int64  `json:"arm_ns,omitempty"`    // deadline, CLOCK_BOOTTIME ns
	Disarm   string `json:"disarm,omitempty"`    // why (fencing policy none)
	AckFence int64  `json:"ack_fence,omitempty"` // seq of a fenced notice
	// guard → agent
	Fenced      int64    `json:"fenced,omitempty"` // seq
	Hierarchies []string `json:"hierarchies,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	TookMS      float64  `json:"took_ms,omitempty"`
	Failures    []string `json:"failures,omitempty"`
}

// guard is the fence guard's state.
type guard struct {
	cfg GuardConfig
	log *slog.Logger
	// now returns CLOCK_BOOTTIME.
	now func() time.Duration

	// fence fences what the data directory records (fenceDir; tests
	// replace it).
	fence func(reason string) fenceResult
	// fenceFailed is set when a fencing left something unkilled: the
	// watchdog is then no longer fed, so that the node reboots.
	fenceFailed atomic.Bool

	// mu guards the fields below.
	mu       sync.Mutex
	deadline time.Duration // zero: disarmed
	conns    map[*guardConn]bool
	seq      int64
	wake     chan struct{}
}

type guardConn struct {
	c   net.Conn
	pid int // the peer's pid (SO_PEERCRED), 0 if unknown
	// proc refers to the peer process for a race-free kill (pidfd); nil
	// when unavailable.
	proc *os.Process
	enc  *json.Encoder
	// acks receives the seqs the agent acknowledged.
	acks chan int64
	// wmu serializes writes.
	wmu sync.Mutex
}

func (gc *guardConn) send(m guardMsg) error {
	gc.wmu.Lock()
	defer gc.wmu.Unlock()
	_ = gc.c.SetWriteDeadline(time.Now().Add(time.Second))
	return gc.enc.Encode(m)
}

// boottime returns CLOCK_BOOTTIME, or the process's monotonic time when
// that clock is unavailable (off Linux).
func boottime() time.Duration {
	if d, _, ok := bootClock(); ok {
		return d
	}
	return time.Duration(time.Since(processStart))
}

var processStart = time.Now()

// RunGuard runs the fence guard until ctx ends. It returns nil at once
// when another guard already serves the data directory.
func RunGuard(ctx context.Context, cfg GuardConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 2 * time.Second
	}
	if err := ensureDir(cfg.DataDir); err != nil {
		return err
	}
	unlock, held, err := lockFile(filepath.Join(cfg.DataDir, fileGuardLock))
	if err != nil {
		return err
	}
	if !held {
		log.Info("another fence guard serves this data directory", keyEvent, eventGuardStarted, "already_running", true)
		return nil
	}
	defer unlock()
	if cfg.Realtime {
		if err := guardPriority(); err != nil {
			log.Warn("fence guard runs without part of its protection against a loaded node (real-time priority, locked memory, OOM immunity)", keyErr, err)
		}
	}
	sock := filepath.Join(cfg.DataDir, fileGuardSock)
	_ = os.Remove(sock) // stale: the lock says no guard owns it
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	defer ln.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		return err
	}
	g := &guard{cfg: cfg, log: log, now: boottime, conns: map[*guardConn]bool{}, wake: make(chan struct{}, 1)}
	g.fence = g.fenceDir
	if guardTestHook != nil {
		guardTestHook(g)
	}
	if cfg.Watchdog != "" {
		wd, err := openWatchdog(cfg.Watchdog)
		if err != nil {
			return err
		}
		log.Info("watchdog armed by the fence guard", keyEvent, eventWatchdogOpened, "device", cfg.Watchdog)
		stop := make(chan struct{})
		defer func() {
			close(stop)
			// Only a guard told to stop (ctx) gets here; after a failed
			// fencing the node must still reboot.
			_ = wd.close(!g.fenceFailed.Load())
		}()
		go g.feedWatchdog(wd, stop)
	}
	log.Info("fence guard started", keyEvent, eventGuardStarted, "pid", os.Getpid(), "socket", sock)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go g.accept(ln)
	g.loop(ctx)
	log.Info("fence guard stopped", keyEvent, eventGuardStopped)
	return nil
}

func (g *guard) accept(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		gc := &guardConn{c: c, pid: peerPID(c), enc: json.NewEncoder(c), acks: make(chan int64, 8)}
		if gc.pid > 0 {
			// os.FindProcess holds a pidfd on Linux: the kill below can
			// never hit another process that reused the pid.
			gc.proc, _ = os.FindProcess(gc.pid)
		}
		g.mu.Lock()
		g.conns[gc] = true
		g.mu.Unlock()
		go g.serve(gc)
	}
}

// serve reads one agent's messages until it disconnects.
func (g *guard) serve(gc *guardConn) {
	defer func() {
		gc.c.Close()
		g.mu.Lock()
		delete(g.conns, gc)
		g.mu.Unlock()
	}()
	sc := bufio.NewScanner(gc.c)
	for sc.Scan() {
		var m guardMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			g.log.Warn("fence guard: bad message", keyErr, err)
			return
		}
		switch {
		case m.ArmNS > 0:
			g.arm(time.Duration(m.ArmNS))
		case m.Disarm != "":
			g.mu.Lock()
			was := g.deadline
			g.deadline = 0
			g.mu.Unlock()
			if was != 0 {
				g.log.Warn("fence guard disarmed by the agent", keyEvent, eventGuardDisarmed, keyReason, m.Disarm, "pid", gc.pid)
			}
		case m.AckFence > 0:
			select {
			case gc.acks <- m.AckFence:
			default:
			}
		}
	}
}

// arm replaces the deadline with d, the newest grant of the agent, even
// when it is earlier: the control plane's lease follows the newest
// heartbeat it received, so a restart hold ends with the next ordinary
// lease on both sides. An agent's grants reach the guard in order (one
// connection); a newer agent process supersedes an older one.
func (g *guard) arm(d time.Duration) {
	g.mu.Lock()
	wasDisarmed := g.deadline == 0
	g.deadline = d
	g.mu.Unlock()
	if wasDisarmed {
		g.log.Info("fence guard armed", keyEvent, eventGuardArmed, "deadline_in_ms", (d - g.now()).Milliseconds())
	}
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// guardTestHook, when set by a test, adjusts a guard before it serves.
var guardTestHook func(*guard)

// feedWatchdog kicks wd every WatchdogKick until stop, unless a fencing
// failed: then it withholds the keepalives so that the kernel reboots
// the node, the last resort when a resource cannot be killed.
func (g *guard) feedWatchdog(wd *watchdog, stop <-chan struct{}) {
	every := g.cfg.WatchdogKick
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	logged := false
	for {
		if g.fenceFailed.Load() {
			if !logged {
				logged = true
				g.log.Error("fencing failed: withholding watchdog keepalives so that the node reboots",
					keyEvent, eventWatchdogUnhealthy, keyReason, "fence_failed")
			}
		} else if err := wd.kick(); err != nil {
			g.log.Error("watchdog keepalive failed", keyErr, err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// loop waits for the deadline and fences when it passes.
func (g *guard) loop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		g.mu.Lock()
		d := g.deadline
		g.mu.Unlock()
		wait := time.Hour
		if d != 0 {
			wait = d - g.now()
			if wait <= 0 {
				g.expire(d)
				continue
			}
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-g.wake:
			// No drain: since Go 1.23 Reset discards a pending expiry, and
			// a receive after a Stop that returned false would block
			// forever, leaving the guard unable to fence.
		case <-t.C:
		}
	}
}

// expire fences because deadline d passed, unless a newer deadline came.
func (g *guard) expire(d time.Duration) {
	g.mu.Lock()
	if g.deadline != d {
		g.mu.Unlock()
		return
	}
	g.deadline = 0
	g.seq++
	seq := g.seq
	conns := make([]*guardConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()

	late := g.now() - d
	reason := fmt.Sprintf("fence guard: the agent renewed neither the lease nor its vouch (deadline passed %d ms ago)", late.Milliseconds())
	res := g.fence(reason)
	if len(res.Failures) > 0 {
		g.fenceFailed.Store(true)
	}
	if len(res.Hierarchies) == 0 {
		g.log.Info("fence guard deadline passed with nothing active here", keyEvent, eventGuardExpired, keyReason, reason)
		return
	}
	g.log.Error("fence guard fenced: took every active hierarchy out of service by fast kill", keyEvent, eventGuardFenced,
		keyReason, reason, keyHierarchies, res.Hierarchies, keyDurationMS, float64(res.Took.Microseconds())/1000,
		"failures", res.Failures, "agents", len(conns))

	// Tell the agents; an agent that cannot answer is hung and must not
	// wake up later with a stale picture of what runs here.
	m := guardMsg{Fenced: seq, Hierarchies: res.Hierarchies, Reason: reason,
		TookMS: float64(res.Took.Microseconds()) / 1000, Failures: res.Failures}
	acked := make(chan *guardConn, len(conns))
	for _, c := range conns {
		go func() {
			if c.send(m) != nil {
				return
			}
			timer := time.NewTimer(g.cfg.AckTimeout)
			defer timer.Stop()
			for {
				select {
				case s := <-c.acks:
					if s == seq {
						acked <- c
						return
					}
				case <-timer.C:
					return
				}
			}
		}()
	}
	ok := map[*guardConn]bool{}
	deadline := time.After(g.cfg.AckTimeout + 100*time.Millisecond)
wait:
	for len(ok) < len(conns) {
		select {
		case c := <-acked:
			ok[c] = true
		case <-deadline:
			break wait
		}
	}
	var killed []int
	for _, c := range conns {
		if ok[c] || c.proc == nil || c.pid == os.Getpid() {
			continue
		}
		if killAndWait(c.proc, 2*time.Second) {
			killed = append(killed, c.pid)
		}
	}
	if len(ok) > 0 && len(killed) == 0 {
		return // the agent fenced too and reports it
	}
	// No live agent took over: fence again what an agent may have started
	// meanwhile, and leave the report for the next agent process.
	res2 := g.fence(reason)
	if len(res2.Failures) > 0 {
		g.fenceFailed.Store(true)
	}
	g.log.Error("fence guard: no agent acknowledged the fencing; it is recorded for the next agent process", keyEvent, eventGuardFenced,
		"killed_agents", killed, keyHierarchies, res2.Hierarchies)
	hs := unionStrings(res.Hierarchies, res2.Hierarchies)
	q, err := loadFenceQueue(g.cfg.DataDir, g.log)
	if err != nil {
		g.log.Error("fence guard cannot record the fencing", keyErr, err)
		return
	}
	rep := client.FenceReport{At: time.Now().UTC(), Reason: reason, Hierarchies: []uuid.UUID{}}
	dms := float32(m.TookMS)
	rep.DurationMs = &dms
	for _, id := range hs {
		if u, err := uuid.Parse(id); err == nil {
			rep.Hierarchies = append(rep.Hierarchies, u)
		}
	}
	q.add(rep)
}

// fenceDir fences every hierarchy hierarchies.json records as active,
// with fresh kit instances (kits keep what Fence needs in their state
// directories), and records them fenced.
func (g *guard) fenceDir(reason string) fenceResult {
	r := newRunner(g.cfg.DataDir, nil, g.log.With(keyComponent, "guard"), newMetrics(), func() backstop.Timing { return defaultTiming }, time.Minute)
	if err := r.load(); err != nil {
		g.log.Error("fence guard cannot read the hierarchies' state; fencing nothing it cannot name", keyErr, err)
		return fenceResult{}
	}
	for _, h := range r.list() {
		h.mu.Lock()
		if h.st.Active {
			h.units = r.unitsLocked(h, h.st.Resources)
		}
		h.mu.Unlock()
	}
	return r.fence(reason)
}

func unionStrings(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range append(append([]string(nil), a...), b...) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
