//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

// Node crashes under load (--crashes N): while a point is measured, N
// simulated agents that hold a hierarchy in service die as a crashed
// machine does, spread evenly over the window, each in a cluster no
// switchover is under way in. Each crash is followed to its end:
//
//	fault (agentload's clock)
//	→ detected: the node.down event (its `at`, the control plane's clock;
//	  the same host's clock unless --url points elsewhere)
//	→ issued: the take-over command's signed issue time
//	→ delivered: the command in the backup agent's hands (its long poll
//	  answered with the verified bring-in-service command)
//	→ in service: the agent's success answer acknowledged (the control
//	  plane has recorded the hierarchy in service).
//
// The simulated agents run nothing, so "in service" has no service
// start in it; with real agents and a real service, failbench measures
// fault → service answering.
//
// A crashed machine neither sends nor closes anything: its agent's
// heartbeats and long poll stop at once, every connection it had stays
// open on the control plane's side with nothing more arriving (no FIN, no
// RST; what the control plane sends is never read), and it never answers
// again. Its peers on the communication paths see it dead
// path_heartbeat_ms × path_dead_after after its last path heartbeat, as
// nodeagent's path manager does, and report so in their heartbeats.

// wire is an agent's network: its connections, cut all at once by a
// crash.
type wire struct {
	dialer net.Dialer
	dead   atomic.Bool
	// mu guards the fields below.
	mu    sync.Mutex
	conns map[net.Conn]bool // the open connections (after cut: every one it had, held open)
}

func newWire(d net.Dialer) *wire { return &wire{dialer: d, conns: map[net.Conn]bool{}} }

// dial is the agent transport's DialContext.
func (w *wire) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if w.dead.Load() {
		return nil, errCrashed
	}
	c, err := w.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead.Load() {
		w.conns[c] = true // crashed while dialling: held open, unused
		return nil, errCrashed
	}
	w.conns[c] = true
	return &crashConn{Conn: c, w: w}, nil
}

var errCrashed = errors.New("agentload: this simulated node crashed")

// cut makes the wire dead: nothing more is sent or read, and nothing is
// closed (a read under way returns at once, without anything on the
// wire: a deadline in the past).
func (w *wire) cut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dead.Store(true)
	for c := range w.conns {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
}

// release closes the connections a cut held open (at the end of the run).
func (w *wire) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.conns {
		_ = c.Close()
		delete(w.conns, c)
	}
}

// crashConn is one connection of a wire. Once the wire is cut, writes
// are dropped (as a dead machine's would never leave it), reads fail at
// once (the transport gives the connection up) and Close keeps the
// socket open.
type crashConn struct {
	net.Conn
	w *wire
}

func (c *crashConn) Read(b []byte) (int, error) {
	if c.w.dead.Load() {
		return 0, errCrashed
	}
	n, err := c.Conn.Read(b)
	if c.w.dead.Load() {
		return 0, errCrashed // what arrived after the crash is never seen
	}
	return n, err
}

func (c *crashConn) Write(b []byte) (int, error) {
	if c.w.dead.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *crashConn) Close() error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.w.dead.Load() {
		return nil
	}
	delete(c.w.conns, c.Conn)
	return c.Conn.Close()
}

// crash makes the agent die as a crashed machine: its wire is cut first
// (so that the cancellation below closes nothing), then its loops stop.
// It returns when its last heartbeat was sent: its lease, as the agent
// counts it, ends one lease TTL after that at the latest.
func (a *agent) crash(now time.Time) (lastSent time.Time) {
	a.wire.cut()
	a.stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.crashedAt = now
	return a.lastSent
}

// pathDeadAfter is how long after a crash a peer sees its path to the
// crashed node dead: path_dead_after path heartbeats after the last one
// it received, which left the node up to one interval before the crash.
func (e *env) pathDeadAfter() time.Duration {
	iv := ms(e.timing.PathHeartbeatMs)
	return iv*time.Duration(e.timing.PathDeadAfter) - time.Duration(mrand.Int64N(int64(max(iv, 1))))
}

// crashWatch follows one crash.
type crashWatch struct {
	h        *loadHierarchy
	node     string // the crashed node
	to       string // the node expected to take the hierarchy over
	fault    time.Time
	leaseEnd time.Time // the crashed agent's own deadline: its last heartbeat's send time + lease TTL
	ttl      time.Duration

	// mu guards the fields below.
	mu                           sync.Mutex
	issued, delivered, inService time.Time
	elsewhere                    []string // bring-in-service commands of the hierarchy delivered to other nodes
	done                         chan struct{}
}

// crashPlan coordinates a point's crashes with its switchovers, and
// hands each take-over to the crash it belongs to.
type crashPlan struct {
	// mu guards the fields below.
	mu        sync.Mutex
	switching *loadCluster          // the cluster of the switchover under way
	crashing  map[*loadCluster]bool // clusters with a crash being followed
	watches   map[string]*crashWatch
}

func newCrashPlan() *crashPlan {
	return &crashPlan{crashing: map[*loadCluster]bool{}, watches: map[string]*crashWatch{}}
}

// pickSwitchover chooses the next switchover's hierarchy (nil: none can
// move) among those neither crashed (their second node is gone) nor in a
// cluster with a crash under way, and marks its cluster busy until done.
func (p *crashPlan) pickSwitchover(hs []*loadHierarchy) (h *loadHierarchy, done func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	free := slices.DeleteFunc(slices.Clone(hs), func(h *loadHierarchy) bool { return h.crashed || p.crashing[h.cluster] })
	if len(free) == 0 {
		return nil, func() {}
	}
	h = free[mrand.IntN(len(free))]
	p.switching = h.cluster
	return h, func() {
		p.mu.Lock()
		p.switching = nil
		p.mu.Unlock()
	}
}

// pickCrash chooses a hierarchy in service on a node whose agent holds
// it, in a cluster no switchover and no other crash is under way in, of
// those not crashed before; it marks the cluster crashing. nil: none.
func (p *crashPlan) pickCrash(hs []*loadHierarchy, byNode map[string]*agent) *loadHierarchy {
	p.mu.Lock()
	defer p.mu.Unlock()
	var free []*loadHierarchy
	for _, h := range hs {
		if h.crashed || h.on < 0 || h.cluster == p.switching || p.crashing[h.cluster] {
			continue
		}
		if a := byNode[h.nodes[h.on]]; a != nil && a.holds(h.id) {
			free = append(free, h)
		}
	}
	if len(free) == 0 {
		return nil
	}
	h := free[mrand.IntN(len(free))]
	p.crashing[h.cluster] = true
	return h
}

// holds reports whether the agent has the hierarchy in service and runs.
func (a *agent) holds(hierarchyID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.inService[hierarchyID]
	return ok && a.crashedAt.IsZero()
}

// crashOne crashes the node that has h in service and starts following
// the take-over.
func (e *env) crashOne(h *loadHierarchy) *crashWatch {
	a := e.byNode[h.nodes[h.on]]
	w := &crashWatch{h: h, node: a.nodeID, to: h.nodes[1-h.on], ttl: ms(e.timing.LeaseTtlMs), done: make(chan struct{})}
	e.crashes.mu.Lock()
	e.crashes.watches[h.id] = w
	e.crashes.mu.Unlock()
	w.fault = time.Now()
	// Peers see the path dead path_dead_after heartbeats later.
	e.deadPaths.Store(a.nodeID, w.fault.Add(e.pathDeadAfter()))
	w.leaseEnd = a.crash(w.fault).Add(w.ttl)
	logf("crash: node %s (hierarchy %s in service there; %s should take it over)", a.nodeID, h.id, w.to)
	return w
}

// tookOver is called by an agent for every verified bring-in-service
// command it received (delivered) and answered (answered: its success
// acknowledged; zero if not).
func (p *crashPlan) tookOver(node string, cmd envelope.Command, delivered, answered time.Time) {
	p.mu.Lock()
	w := p.watches[cmd.HierarchyID]
	p.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if node != w.to {
		w.elsewhere = append(w.elsewhere, node)
		return
	}
	if !w.delivered.IsZero() {
		return
	}
	w.issued, w.delivered, w.inService = cmd.IssuedAt, delivered, answered
	if !answered.IsZero() {
		close(w.done)
	}
}

// finish waits for the take-over (at most until deadline), then ends
// the crash's watch and frees its cluster: the hierarchy stays where it
// was taken over and is left out of later switchovers and crashes.
func (p *crashPlan) finish(ctx context.Context, w *crashWatch, deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.watches, w.h.id)
	delete(p.crashing, w.h.cluster)
	w.h.crashed = true
	w.mu.Lock()
	if !w.inService.IsZero() {
		w.h.on = 1 - w.h.on
	}
	w.mu.Unlock()
}

// crashTimeout bounds how long a crash's take-over is waited for.
const crashTimeout = time.Minute

// crashResult is what a point's crashes measured.
type crashResult struct {
	planned, crashed, done int
	skipped                int // no hierarchy could be crashed when due
	detect, issued         []time.Duration
	delivered, inService   []time.Duration
	nodeDown, nodeUnreach  int           // the crashed nodes' node.down / node.unreachable events since their crash
	completed              int           // failover.completed events of the crashed hierarchies
	beforeLease            int           // take-overs delivered before the crashed agent's lease could have run out (must be 0)
	beforeTTL              int           // take-overs delivered before fault + lease TTL
	minMargin              time.Duration // smallest delivered − (fault + lease TTL)
	elsewhere              int           // bring-in-service commands to a node other than the expected one
	ttl                    time.Duration
	timelines              []string // one line per crash, for the log
}

// summarize reads the timelines of a point's crashes from what the
// agents saw and from the events read after the window (oldest first).
func summarize(ws []*crashWatch, evs []event, planned, skipped int) crashResult {
	r := crashResult{planned: planned, crashed: len(ws), skipped: skipped}
	for _, w := range ws {
		w.mu.Lock()
		r.ttl = w.ttl
		var down time.Time
		for _, ev := range evs {
			if ev.At.Before(w.fault) {
				continue // before the crash: the node ran (a false detection, if any)
			}
			switch {
			case ev.Subject["node_id"] == w.node && ev.Type == "node.down":
				r.nodeDown++
				if down.IsZero() {
					down = ev.At
				}
			case ev.Subject["node_id"] == w.node && ev.Type == "node.unreachable":
				r.nodeUnreach++
			case ev.Subject["hierarchy_id"] == w.h.id && ev.Type == "failover.completed":
				r.completed++
			}
		}
		if !down.IsZero() {
			r.detect = append(r.detect, down.Sub(w.fault))
		}
		r.elsewhere += len(w.elsewhere)
		if !w.delivered.IsZero() {
			r.issued = append(r.issued, w.issued.Sub(w.fault))
			r.delivered = append(r.delivered, w.delivered.Sub(w.fault))
			if w.delivered.Before(w.leaseEnd) {
				r.beforeLease++
			}
			m := w.delivered.Sub(w.fault.Add(w.ttl))
			if m < 0 {
				r.beforeTTL++
			}
			if len(r.delivered) == 1 || m < r.minMargin {
				r.minMargin = m
			}
		}
		if !w.inService.IsZero() {
			r.done++
			r.inService = append(r.inService, w.inService.Sub(w.fault))
		}
		since := func(t time.Time) string {
			if t.IsZero() {
				return "–"
			}
			return fmt.Sprintf("%+.0f ms", msf(t.Sub(w.fault)))
		}
		r.timelines = append(r.timelines, fmt.Sprintf("node %s crashed at %s: its lease end %s, node.down %s, issued %s, delivered %s, in service %s",
			w.node, w.fault.Format("15:04:05.000"), since(w.leaseEnd), since(down), since(w.issued), since(w.delivered), since(w.inService)))
		w.mu.Unlock()
	}
	return r
}

// printCrashes renders a point's crashes on one line.
func printCrashes(w io.Writer, r *crashResult) {
	fmt.Fprintf(w, "  crashes %d of %d (%d in service again, %d skipped: no hierarchy free), from the fault, p50/max ms: detected (node.down) %s, command issued %s, delivered %s, in service %s;"+
		" crashed nodes' node.down %d, node.unreachable %d; take-overs before the crashed agent's lease could have run out: %d (must be 0), before fault + lease TTL (%v): %d (earliest %+.0f ms after it); commands to another node %d\n",
		r.crashed, r.planned, r.done, r.skipped, p50Max(r.detect), p50Max(r.issued), p50Max(r.delivered), p50Max(r.inService),
		r.nodeDown, r.nodeUnreach, r.beforeLease, r.ttl, r.beforeTTL, msf(r.minMargin), r.elsewhere)
}

func p50Max(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f/%.0f", msf(pct(ds, 50)), msf(pct(ds, 100)))
}

// crashRun is what runCrashes did.
type crashRun struct {
	watches []*crashWatch
	skipped int
}

// runCrashes crashes --crashes nodes, evenly spread over the window that
// starts at start, and returns once each take-over is done (or waited
// for crashTimeout).
func (e *env) runCrashes(ctx context.Context, hs []*loadHierarchy, start time.Time) crashRun {
	var r crashRun
	n := e.o.crashes
	var wg sync.WaitGroup
	for k := range n {
		due := start.Add(e.o.duration * time.Duration(k+1) / time.Duration(n+1))
		if testkit.Sleep(ctx, time.Until(due)) != nil {
			break
		}
		h := e.crashes.pickCrash(hs, e.byNode)
		if h == nil {
			r.skipped++
			logf("crash %d: no hierarchy in service in a cluster free of switchovers and crashes", k+1)
			continue
		}
		w := e.crashOne(h)
		r.watches = append(r.watches, w)
		wg.Go(func() { e.crashes.finish(ctx, w, w.fault.Add(crashTimeout)) })
	}
	wg.Wait()
	return r
}

// crashedBy reports whether the agent was crashed on purpose at or
// before t.
func (a *agent) crashedBy(t time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.crashedAt.IsZero() && !t.Before(a.crashedAt)
}

// liveAgentSeconds sums how long each agent ran between start and end:
// a crashed agent counts until its crash, so the heartbeats expected
// leave out those it could no longer send.
func liveAgentSeconds(all []*agent, start, end time.Time) float64 {
	var s float64
	for _, a := range all {
		a.mu.Lock()
		until := end
		if !a.crashedAt.IsZero() && a.crashedAt.Before(end) {
			until = a.crashedAt
		}
		a.mu.Unlock()
		s += max(0, until.Sub(start).Seconds())
	}
	return s
}

// printCrashTable renders the crashes of every point.
func printCrashTable(w io.Writer, o options, rows []pointResult) {
	fmt.Fprintf(w, "node crashes while measuring (%s profile; from the fault, p50/max ms; \"early\": take-overs delivered before the crashed agent's lease could have run out, must be 0 — every take-over is also checked against fault + lease TTL)\n", o.profile)
	fmt.Fprintln(w, "| agents | crashes (in service again) | detected (node.down) | command issued | command delivered | in service | crashed nodes down / unreachable | early | before fault + TTL (earliest after it) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		c := r.crash
		if c == nil {
			continue
		}
		fmt.Fprintf(w, "| %d | %d (%d) | %s | %s | %s | %s | %d / %d | %d | %d (%+.0f ms) |\n", r.agents, c.crashed, c.done,
			p50Max(c.detect), p50Max(c.issued), p50Max(c.delivered), p50Max(c.inService), c.nodeDown, c.nodeUnreach, c.beforeLease, c.beforeTTL, msf(c.minMargin))
	}
}
