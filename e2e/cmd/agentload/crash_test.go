//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

// TestCutWireLooksLikeACrashedMachine: once an agent's wire is cut, the
// other end sees what a crashed machine leaves behind: nothing more
// arrives, and the connection is not closed (no EOF, no reset) however
// the agent's HTTP transport tries to close it, so the control plane
// cannot tell the crash from silence. The agent sees nothing the other
// end sends and cannot dial again. Only the end of the run closes it.
func TestCutWireLooksLikeACrashedMachine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	w := newWire(net.Dialer{})
	c, err := w.dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	defer srv.Close()
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := io.ReadFull(srv, buf[:6]); err != nil || string(buf[:n]) != "before" {
		t.Fatalf("before the crash the server read %q, %v", buf[:n], err)
	}

	// A read under way when the crash comes returns, and sees nothing.
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		readErr <- err
	}()
	w.cut()
	if err := <-readErr; !errors.Is(err, errCrashed) {
		t.Fatalf("read under way at the crash: %v, want errCrashed", err)
	}
	if n, err := c.Write([]byte("after")); err != nil || n != 5 {
		t.Fatalf("write after the crash: %d, %v; want it dropped silently", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Write([]byte("command")); err != nil {
		t.Fatalf("the server's write to the crashed node: %v (its socket must stay open)", err)
	}
	if _, err := c.Read(buf); !errors.Is(err, errCrashed) {
		t.Fatalf("read after the crash: %v, want errCrashed", err)
	}
	if _, err := w.dial(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, errCrashed) {
		t.Fatalf("dial after the crash: %v, want errCrashed", err)
	}
	// Nothing arrives and nothing ends the connection: the server's read
	// waits until its deadline (an EOF or a reset would come at once).
	_ = srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := srv.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server read after the crash: %q, %v; want nothing until the deadline", buf[:n], err)
	}

	w.release()
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	// The release closes it: EOF, or a reset as the server's "command"
	// was never read.
	if n, err := srv.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server read after the release: %q, %v; want the connection ended", buf[:n], err)
	}
}

// TestPeersSeeTheCrashedPathDead: a peer reports its path to a crashed
// node up until the path's dead time, then down with full loss; its
// other paths stay up.
func TestPeersSeeTheCrashedPathDead(t *testing.T) {
	self, crashed, other := uuid.New(), uuid.New(), uuid.New()
	e := &env{timing: client.Timing{HeartbeatMs: 250, QuickCheckIntervalMs: 500, DeepCheckIntervalMs: 5000, PathHeartbeatMs: 200, PathDeadAfter: 3}}
	a := newAgent(e, uuid.NewString(), self.String())
	a.conf = &client.AgentConfig{Paths: []client.Path{
		{Id: uuid.New(), LocalNodeId: self, RemoteNodeId: crashed},
		{Id: uuid.New(), LocalNodeId: self, RemoteNodeId: other},
	}}
	fault := time.Now()
	deadAt := fault.Add(600 * time.Millisecond)
	e.deadPaths.Store(crashed.String(), deadAt)
	states := func(now time.Time) (toCrashed, toOther client.PathReport) {
		hb := a.report(now)
		for _, p := range *hb.Paths {
			if p.PeerNodeId == crashed {
				toCrashed = p
			} else {
				toOther = p
			}
		}
		return toCrashed, toOther
	}
	if c, o := states(deadAt.Add(-time.Millisecond)); c.State != client.PathReportStateUp || o.State != client.PathReportStateUp {
		t.Fatalf("before the dead time: paths %s / %s, want both up", c.State, o.State)
	}
	c, o := states(deadAt)
	if c.State != client.PathReportStateDown || c.Loss == nil || *c.Loss != 1 || c.RttMs != nil {
		t.Fatalf("at the dead time: path to the crashed node %+v, want down with loss 1 and no rtt", c)
	}
	if o.State != client.PathReportStateUp {
		t.Fatalf("path to a running node %s, want up", o.State)
	}
	// The dead time follows the profile: dead_after path heartbeats after
	// the last one, which left up to one interval before the crash.
	for range 100 {
		if d := e.pathDeadAfter(); d <= 400*time.Millisecond || d > 600*time.Millisecond {
			t.Fatalf("pathDeadAfter %v, want in (400 ms, 600 ms]", d)
		}
	}
}

// TestCrashTargets: a crash takes a hierarchy whose node's agent holds
// it in service, never in the cluster being switched over or one with a
// crash under way, never one crashed before; switchovers leave out
// crashed hierarchies and clusters with a crash under way. This is what
// keeps a crash's take-over apart from an operator's move.
func TestCrashTargets(t *testing.T) {
	e := &env{timing: client.Timing{HeartbeatMs: 250}}
	c1, c2, c3 := &loadCluster{id: "c1"}, &loadCluster{id: "c2"}, &loadCluster{id: "c3"}
	byNode := map[string]*agent{}
	mk := func(c *loadCluster, id string, holds bool) *loadHierarchy {
		h := &loadHierarchy{id: id, cluster: c, nodes: [2]string{id + "-a", id + "-b"}, on: 0}
		a := newAgent(e, c.id, h.nodes[0])
		if holds {
			a.inService[id] = 1
		}
		byNode[h.nodes[0]] = a
		byNode[h.nodes[1]] = newAgent(e, c.id, h.nodes[1])
		return h
	}
	h1, h2, h3 := mk(c1, "h1", true), mk(c2, "h2", true), mk(c3, "h3", false)
	hs := []*loadHierarchy{h1, h2, h3}
	p := newCrashPlan()

	sw, done := p.pickSwitchover([]*loadHierarchy{h1})
	if sw != h1 {
		t.Fatalf("switchover picked %v, want h1", sw)
	}
	for range 20 {
		if got := p.pickCrash(hs, byNode); got != h2 {
			t.Fatalf("crash picked %v while c1 switches over and h3's agent holds nothing; want h2", got)
		}
		delete(p.crashing, c2)
	}
	done()
	p.crashing[c2] = true // h2's crash under way
	if got := p.pickCrash(hs, byNode); got != h1 {
		t.Fatalf("crash picked %v, want h1 (c2 has a crash under way)", got)
	}
	// c1 and c2 crashing now: switchovers only in c3.
	for range 20 {
		if h, done := p.pickSwitchover(hs); h != h3 {
			t.Fatalf("switchover picked %v, want h3", h)
		} else {
			done()
		}
	}
	h3.crashed = true
	if h, _ := p.pickSwitchover(hs); h != nil {
		t.Fatalf("switchover picked %v with every hierarchy crashed or crashing", h)
	}
	// A crashed agent is no target, even once its cluster is free.
	p.crashing = map[*loadCluster]bool{}
	byNode["h1-a"].crashedAt = time.Now()
	h2.crashed = true
	if got := p.pickCrash(hs, byNode); got != nil {
		t.Fatalf("crash picked %v; h1's agent crashed already, h2 and h3 crashed", got)
	}
}

// TestCrashTimeline: a crash's timeline is read from the take-over the
// agents saw and the events; a take-over delivered before the crashed
// agent's lease could have run out is counted as a second copy, and one
// before fault + lease TTL is reported; the crashed node's own events are
// counted with the crash from the crash on, not as false detections;
// before its crash, a node's events are false detections as any other's.
func TestCrashTimeline(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	ttl := time.Second
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	hA := &loadHierarchy{id: "hA", on: 0, nodes: [2]string{"nA", "nA2"}}
	hB := &loadHierarchy{id: "hB", on: 1, nodes: [2]string{"nB2", "nB"}}
	hC := &loadHierarchy{id: "hC", on: 0, nodes: [2]string{"nC", "nC2"}}
	p := newCrashPlan()
	watch := func(h *loadHierarchy, fault, lastSent int) *crashWatch {
		w := &crashWatch{h: h, node: h.nodes[h.on], to: h.nodes[1-h.on], fault: at(fault), leaseEnd: at(lastSent).Add(ttl), ttl: ttl, done: make(chan struct{})}
		p.watches[h.id] = w
		return w
	}
	wA := watch(hA, 0, -100)     // lease end +900
	wB := watch(hB, 5000, 4900)  // lease end 5900
	wC := watch(hC, 10000, 9800) // never taken over
	cmd := func(h string, issued int) envelope.Command {
		return envelope.Command{HierarchyID: h, Action: envelope.BringInService, IssuedAt: at(issued)}
	}
	p.tookOver("nA2", cmd("hA", 1150), at(1160), at(1170))
	p.tookOver("nA2", cmd("hA", 1150), at(1190), at(1195)) // a second delivery is not the take-over
	p.tookOver("nB2", cmd("hB", 5850), at(5880), at(5890)) // before nB's lease end: a second copy
	p.tookOver("nX", cmd("hC", 10000), at(10010), time.Time{})
	p.tookOver("nQ", cmd("other", 0), at(1), at(2)) // not a crash's hierarchy
	for _, w := range []*crashWatch{wA, wB} {
		select {
		case <-w.done:
		default:
			t.Fatalf("watch of %s not done after its take-over was answered", w.h.id)
		}
	}
	ctx := context.Background()
	p.finish(ctx, wA, time.Now().Add(time.Minute))
	p.finish(ctx, wC, time.Now()) // timed out
	if !hA.crashed || hA.on != 1 || !hC.crashed || hC.on != 0 || len(p.watches) != 1 {
		t.Fatalf("after finish: hA crashed %v on %d, hC crashed %v on %d, %d watches left; want both crashed, hA on its backup, hC where it was",
			hA.crashed, hA.on, hC.crashed, hC.on, len(p.watches))
	}
	ev := func(typ, key, id string, ms int) event {
		return event{Type: typ, Subject: map[string]string{key: id}, At: at(ms)}
	}
	evs := []event{
		ev("node.unreachable", "node_id", "nB", 4000), // before nB's crash: a false detection
		ev("node.unreachable", "node_id", "nA", 1000),
		ev("node.down", "node_id", "nA", 1140),
		ev("failover.completed", "hierarchy_id", "hA", 1168),
		ev("node.down", "node_id", "nB", 5840),
		ev("node.down", "node_id", "healthy", 3000),
		ev("node.unreachable", "node_id", "healthy", 3000),
	}
	r := summarize([]*crashWatch{wA, wB, wC}, evs, 4, 1)
	want := crashResult{planned: 4, crashed: 3, done: 2, skipped: 1,
		detect: []time.Duration{1140 * time.Millisecond, 840 * time.Millisecond}, issued: []time.Duration{1150 * time.Millisecond, 850 * time.Millisecond},
		delivered: []time.Duration{1160 * time.Millisecond, 880 * time.Millisecond}, inService: []time.Duration{1170 * time.Millisecond, 890 * time.Millisecond},
		nodeDown: 2, nodeUnreach: 1, completed: 1, beforeLease: 1, beforeTTL: 1, minMargin: -120 * time.Millisecond, elsewhere: 1, ttl: ttl}
	if len(r.timelines) != 3 {
		t.Fatalf("%d timelines, want one per crash", len(r.timelines))
	}
	r.timelines = nil
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("summary\n got %+v\nwant %+v", r, want)
	}

	// The crashed nodes' events are the crash's; a healthy node's are
	// false detections.
	e := &env{byNode: map[string]*agent{}}
	for _, n := range []string{"nA", "nB", "healthy"} {
		e.byNode[n] = newAgent(e, "c", n)
	}
	e.byNode["nA"].crashedAt, e.byNode["nB"].crashedAt = at(0), at(5000)
	if down, unreachable := e.countDetections(evs); down != 1 || unreachable != 2 {
		t.Fatalf("false detections %d down / %d unreachable, want 1 / 2 (the healthy node's, and nB's before its crash)", down, unreachable)
	}
}

// TestLiveAgentSeconds: a crashed agent's heartbeats are expected only
// until its crash, and not at all after a crash in an earlier point.
func TestLiveAgentSeconds(t *testing.T) {
	e := &env{}
	start := time.Now()
	end := start.Add(10 * time.Second)
	live, crashedNow, crashedBefore := newAgent(e, "c", "a"), newAgent(e, "c", "b"), newAgent(e, "c", "d")
	crashedNow.crashedAt = start.Add(4 * time.Second)
	crashedBefore.crashedAt = start.Add(-time.Minute)
	if s := liveAgentSeconds([]*agent{live, crashedNow, crashedBefore}, start, end); s != 14 {
		t.Fatalf("live agent-seconds %v, want 14 (10 + 4 + 0)", s)
	}
}
