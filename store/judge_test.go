package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

// Direct tests of the failure detector (JudgeNodes) and of the term
// check every leader write makes. Times are set in SQL relative to the
// database clock, so no test sleeps; the lan profile's lease is 1 s plus
// a 250 ms grace.

type judgeEnv struct {
	t     *testing.T
	st    *store.Store
	c     backstop.Cluster
	nodes []backstop.Node
	term  int64
}

// newJudgeEnv makes a lan cluster of n enrolled nodes, all up with fresh
// leases and reports that see every peer, led by a leader whose grace
// period is long over.
func newJudgeEnv(t *testing.T, n int) *judgeEnv {
	t.Helper()
	e := &judgeEnv{t: t, st: storetest.New(t)}
	e.c = newCluster(t, e.st, "judge")
	for i := range n {
		e.nodes = append(e.nodes, newNode(t, e.st, e.c, fmt.Sprintf("n%d", i+1)))
	}
	e.exec(`UPDATE control_plane SET leader_id = 'test', leader_since = now() - interval '1 hour' WHERE id = 1`)
	term, err := e.st.CurrentTerm(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.term = term
	for i := range e.nodes {
		seen := map[int]string{}
		for j := range e.nodes {
			if j != i {
				seen[j] = "up"
			}
		}
		// Heartbeats in node order, a millisecond apart.
		e.set(i, "up", fmt.Sprintf("-%d ms", 100-i), "1 s", seen)
	}
	return e
}

func (e *judgeEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.st.Pool().Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// set gives node i a state, a last heartbeat at now()+lastHB, a lease
// running out at now()+lease, and a report that sees peer j over one path
// in state seen[j].
func (e *judgeEnv) set(i int, state, lastHB, lease string, seen map[int]string) {
	e.t.Helper()
	type path struct {
		PathID     string `json:"path_id"`
		PeerNodeID string `json:"peer_node_id"`
		State      string `json:"state"`
	}
	rep := struct {
		ConfigVersion int    `json:"config_version"`
		Paths         []path `json:"paths"`
	}{Paths: []path{}}
	for j, s := range seen {
		rep.Paths = append(rep.Paths, path{PathID: fmt.Sprintf("0195f7a4-2222-7000-8000-%012d", i*100+j), PeerNodeID: e.nodes[j].ID, State: s})
	}
	raw, _ := json.Marshal(rep)
	e.exec(`UPDATE nodes SET state = $2, last_heartbeat_at = now() + $3::interval, lease_expires_at = now() + $4::interval,
		report = $5, state_since = now() - interval '1 hour' WHERE id = $1`, e.nodes[i].ID, state, lastHB, lease, raw)
}

// lapse makes node i's lease run out (it sent its last heartbeat 1.3 s
// ago), keeping its report.
func (e *judgeEnv) lapse(i int) {
	e.t.Helper()
	e.exec(`UPDATE nodes SET last_heartbeat_at = now() - interval '1300 ms', lease_expires_at = now() - interval '50 ms' WHERE id = $1`, e.nodes[i].ID)
}

// placeOnFirst creates hierarchy "web" on the first two nodes, in service
// on the first.
func (e *judgeEnv) placeOnFirst() backstop.Hierarchy {
	e.t.Helper()
	h, err := e.st.CreateHierarchy(actorCtx(e.t), vipHierarchy(e.c, "web", e.nodes[0], e.nodes[1]))
	if err != nil {
		e.t.Fatal(err)
	}
	e.exec(`UPDATE hierarchies SET placement_node_id = $2, placement_state = 'in_service', epoch = 1 WHERE id = $1`, h.ID, e.nodes[0].ID)
	return h
}

// silenceFirst lets the first node's lease lapse while the second, fresh,
// reports it cannot see it: the evidence that makes it down.
func (e *judgeEnv) silenceFirst() {
	e.t.Helper()
	e.lapse(0)
	e.set(1, "up", "-10 ms", "1 s", map[int]string{0: "down"})
}

// fakeSign signs nothing: the store keeps what it is given.
func fakeSign(backstop.CommandSpec) (backstop.SignedCommand, time.Time, time.Time, error) {
	return backstop.SignedCommand{KeyID: "k", Payload: []byte("{}"), Signature: []byte("s")}, time.Now(), time.Now().Add(time.Minute), nil
}

func (e *judgeEnv) judge() []backstop.NodeTransition {
	e.t.Helper()
	trs, err := e.st.JudgeNodes(e.t.Context(), e.term)
	if err != nil {
		e.t.Fatalf("JudgeNodes: %v", err)
	}
	return trs
}

func (e *judgeEnv) states() []string {
	e.t.Helper()
	out := make([]string, len(e.nodes))
	for i, n := range e.nodes {
		if err := e.st.Pool().QueryRow(e.t.Context(), `SELECT state FROM nodes WHERE id = $1`, n.ID).Scan(&out[i]); err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

// nodeEvents lists the types of the cluster's node.* events, oldest first.
func (e *judgeEnv) nodeEvents() []string {
	e.t.Helper()
	rows, err := e.st.Pool().Query(e.t.Context(), `SELECT type FROM events WHERE cluster_id = $1 AND type LIKE 'node.%' ORDER BY seq`, e.c.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func (e *judgeEnv) wantStates(want ...string) {
	e.t.Helper()
	got := e.states()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Fatalf("node states %v, want %v", got, want)
	}
}

// Never two copies: an overloaded control plane (backstopd or PostgreSQL
// starved) lets every lease of a cluster lapse at once, and then no peer
// report is fresh. That is no evidence that anyone died: JudgeNodes
// declares nobody down (or even unreachable), writes no event, and the
// engine moves nothing — also when the last reports, now stale, said a
// peer was dead.
func TestJudgeStarvedControlPlane(t *testing.T) {
	e := newJudgeEnv(t, 3)
	// n3's last (stale) report said n1 was dead: stale evidence counts
	// for nothing.
	e.set(2, "up", "-90 ms", "1 s", map[int]string{0: "down", 1: "up"})
	for i := range e.nodes {
		e.lapse(i)
	}
	if trs := e.judge(); len(trs) != 0 {
		t.Fatalf("transitions with every lease lapsed: %+v", trs)
	}
	e.wantStates("up", "up", "up")
	if evs := e.nodeEvents(); len(evs) != 0 {
		t.Fatalf("node events with every lease lapsed: %v", evs)
	}
	// The engine reads them as up, with no lapsed lease to wake for.
	if o, err := e.st.LeaseOutlook(t.Context()); err != nil || o.Running || !o.Lapsed {
		t.Fatalf("LeaseOutlook with every lease lapsed: %+v, err %v; want no lease to wait for, lapsed ones to judge", o, err)
	}
	// The control plane recovers: n2's heartbeat arrives first and sees
	// n1 and n3 alive, so they are unreachable at most, never down.
	e.set(1, "up", "0 s", "1250 ms", map[int]string{0: "up", 2: "up"})
	e.judge()
	e.wantStates("unreachable", "up", "unreachable")
	for _, ev := range e.nodeEvents() {
		if ev == "node.down" {
			t.Fatalf("node.down after the control plane recovered: %v", e.nodeEvents())
		}
	}
}

// Never two copies, and still fail over: in a 2-node cluster the active
// node crashes; its peer, heartbeating on, reports it dead on every path
// after its last heartbeat, so it is down (its agent fenced itself or it
// is dead) and its hierarchies may move.
func TestJudgeNodeCrash(t *testing.T) {
	e := newJudgeEnv(t, 2)
	e.lapse(0)
	e.set(1, "up", "-10 ms", "1 s", map[int]string{0: "down"})
	trs := e.judge()
	if len(trs) != 1 || trs[0].NodeID != e.nodes[0].ID || trs[0].From != backstop.NodeUp || trs[0].To != backstop.NodeDown {
		t.Fatalf("transitions: %+v, want n1 up → down", trs)
	}
	e.wantStates("down", "up")
	if evs := e.nodeEvents(); fmt.Sprint(evs) != "[node.down]" {
		t.Fatalf("events %v, want [node.down]", evs)
	}
	// Judged once: another pass changes nothing.
	if trs := e.judge(); len(trs) != 0 {
		t.Fatalf("second pass: %+v", trs)
	}
}

// Never two copies: a peer's report that predates the node's last
// heartbeat is no evidence of its death, even from a peer whose lease
// is still running (its agent, say, is held through a restart).
func TestJudgeOldReportIsNoEvidence(t *testing.T) {
	e := newJudgeEnv(t, 2)
	e.set(1, "up", "-2 s", "1 s", map[int]string{0: "down"})
	e.lapse(0) // n1's last heartbeat (1.3 s ago) came after n2's report
	if trs := e.judge(); len(trs) != 0 {
		t.Fatalf("transitions on an older report: %+v", trs)
	}
	e.wantStates("up", "up")
}

// Never two copies: while a fresh peer still sees the node on a path,
// the node is alive (only the control plane lost it): it is unreachable,
// a warning, and nothing moves; its peers' other dead paths to it do not
// make it down.
func TestJudgeUnreachable(t *testing.T) {
	e := newJudgeEnv(t, 3)
	e.lapse(0)
	e.set(1, "up", "-10 ms", "1 s", map[int]string{0: "down", 2: "up"})
	e.set(2, "up", "-10 ms", "1 s", map[int]string{0: "up", 1: "up"})
	trs := e.judge()
	if len(trs) != 1 || trs[0].To != backstop.NodeUnreachable {
		t.Fatalf("transitions: %+v, want n1 unreachable", trs)
	}
	e.wantStates("unreachable", "up", "up")
	st, err := e.st.ClusterStatus(t.Context(), e.c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Nodes[0].PathsAlive {
		t.Errorf("ClusterStatus: n1 not seen alive, though n3 sees it")
	}
	// Now the last peer that saw it loses it too: down.
	e.set(2, "up", "-5 ms", "1 s", map[int]string{0: "down", 1: "up"})
	trs = e.judge()
	if len(trs) != 1 || trs[0].From != backstop.NodeUnreachable || trs[0].To != backstop.NodeDown {
		t.Fatalf("transitions: %+v, want n1 unreachable → down", trs)
	}
	if evs := e.nodeEvents(); fmt.Sprint(evs) != "[node.unreachable node.down]" {
		t.Fatalf("events %v", evs)
	}
}

// Still fail over when two of three nodes crash together: the survivor's
// fresh report sees both dead, so both are down (the survivor takes their
// hierarchies; the crashed nodes' own stale reports of each other count
// for nothing either way).
func TestJudgeTwoOfThreeCrash(t *testing.T) {
	e := newJudgeEnv(t, 3)
	e.lapse(0)
	e.lapse(1)
	e.set(2, "up", "-10 ms", "1 s", map[int]string{0: "down", 1: "down"})
	if trs := e.judge(); len(trs) != 2 {
		t.Fatalf("transitions: %+v, want n1 and n2 down", trs)
	}
	e.wantStates("down", "down", "up")
}

// Never two copies in a one-node cluster: with no peer there is never
// evidence of death, and its agent never fences itself (one of one is a
// majority), so a lapsed lease makes it unreachable, never down, and
// nothing is marked failed.
func TestJudgeLoneNode(t *testing.T) {
	e := newJudgeEnv(t, 1)
	e.lapse(0)
	trs := e.judge()
	if len(trs) != 1 || trs[0].To != backstop.NodeUnreachable {
		t.Fatalf("transitions: %+v, want unreachable", trs)
	}
	// A second node created but never enrolled gives no evidence either.
	e2 := newJudgeEnv(t, 1)
	newNode(t, e2.st, e2.c, "pending")
	e2.lapse(0)
	if trs := e2.judge(); len(trs) != 1 || trs[0].To != backstop.NodeUnreachable {
		t.Fatalf("with a pending peer: %+v, want unreachable", trs)
	}
}

// One leader per term, and a deposed leader cannot write: once the term
// moved on, JudgeNodes and placement writes of the old term fail with
// backstop.ErrStaleTerm and change nothing (no state, no event, no epoch,
// no command).
func TestStaleTermWritesNothing(t *testing.T) {
	e := newJudgeEnv(t, 2)
	h := e.placeOnFirst()
	e.silenceFirst()
	old := e.term
	e.exec(`UPDATE control_plane SET term = term + 1, leader_id = 'other', leader_since = now() - interval '1 hour' WHERE id = 1`)

	if trs, err := e.st.JudgeNodes(t.Context(), old); !errors.Is(err, backstop.ErrStaleTerm) || len(trs) != 0 {
		t.Fatalf("JudgeNodes with a stale term: %+v, %v; want ErrStaleTerm", trs, err)
	}
	e.wantStates("up", "up")
	if evs := e.nodeEvents(); len(evs) != 0 {
		t.Fatalf("events after a stale JudgeNodes: %v", evs)
	}
	signed := false
	sign := func(c backstop.CommandSpec) (backstop.SignedCommand, time.Time, time.Time, error) {
		signed = true
		return fakeSign(c)
	}
	_, _, err := e.st.StartMove(t.Context(), old, backstop.MoveRequest{Kind: backstop.MoveFailover, ClusterID: e.c.ID, HierarchyID: h.ID,
		ExpectEpoch: 1, To: e.nodes[1].ID, DetectedAt: time.Now(), Decision: backstop.DecisionRecord{ClusterID: e.c.ID, HierarchyID: h.ID,
			Kind: "failover", From: e.nodes[0].ID, To: e.nodes[1].ID, Reason: "test", Key: "k"}}, sign)
	if !errors.Is(err, backstop.ErrStaleTerm) {
		t.Fatalf("StartMove with a stale term: %v, want ErrStaleTerm", err)
	}
	var node string
	var epoch, commands, incidents int64
	if err := e.st.Pool().QueryRow(t.Context(), `SELECT placement_node_id::text, epoch, (SELECT count(*) FROM commands), (SELECT count(*) FROM incidents)
		FROM hierarchies WHERE id = $1`, h.ID).Scan(&node, &epoch, &commands, &incidents); err != nil {
		t.Fatal(err)
	}
	if node != e.nodes[0].ID || epoch != 1 || commands != 0 || incidents != 0 || signed {
		t.Fatalf("after a stale StartMove: node %s epoch %d, %d commands, %d incidents, signed %v; want n1, 1, none", node, epoch, commands, incidents, signed)
	}
	// The current term judges.
	e.term = old + 1
	if trs := e.judge(); len(trs) != 1 || trs[0].To != backstop.NodeDown {
		t.Fatalf("current term: %+v", trs)
	}
}

// No judgement during a new leader's first lease: a replica that just
// took over cannot know which heartbeats its predecessor was too slow to
// take, so for one lease period (TTL plus grace) after leader_since it
// judges nobody, even on evidence of death; afterwards it does.
func TestJudgeNewLeaderGrace(t *testing.T) {
	e := newJudgeEnv(t, 2)
	e.exec(`UPDATE control_plane SET leader_since = now() - interval '1 s' WHERE id = 1`) // lease period: 1.25 s
	e.lapse(0)
	e.set(1, "up", "-10 ms", "1 s", map[int]string{0: "down"})
	if trs := e.judge(); len(trs) != 0 {
		t.Fatalf("transitions within the new leader's first lease: %+v", trs)
	}
	e.wantStates("up", "up")
	e.exec(`UPDATE control_plane SET leader_since = now() - interval '1300 ms' WHERE id = 1`)
	if trs := e.judge(); len(trs) != 1 || trs[0].To != backstop.NodeDown {
		t.Fatalf("transitions after the grace: %+v, want n1 down", trs)
	}
}

// The engine never spins: LeaseOutlook's Next is the next lease still
// running, never one already lapsed (a node left unjudged, or
// unreachable, keeps a lapsed lease for as long as that lasts); Lapsed
// tells whether the failure detector has work (the engine judges only
// then: invariant "a crash is detected when its lease expires" rests on
// Lapsed being true as soon as any up or unreachable node's lease ran
// out).
func TestLeaseOutlook(t *testing.T) {
	e := newJudgeEnv(t, 3)
	for i := range 3 {
		e.exec(`UPDATE nodes SET state = 'up', lease_expires_at = now() + interval '10 s' WHERE id = $1`, e.nodes[i].ID)
	}
	if o, err := e.st.LeaseOutlook(t.Context()); err != nil || !o.Running || o.Lapsed || o.Next <= 9*time.Second || o.Next > 10*time.Second {
		t.Fatalf("LeaseOutlook, every lease running for 10 s: %+v, %v; want running, none lapsed, 9 s < next ≤ 10 s", o, err)
	}
	e.lapse(0)
	e.exec(`UPDATE nodes SET lease_expires_at = now() + interval '800 ms' WHERE id = $1`, e.nodes[1].ID)
	o, err := e.st.LeaseOutlook(t.Context())
	if err != nil || !o.Running || !o.Lapsed || o.Next <= 0 || o.Next > 800*time.Millisecond {
		t.Fatalf("LeaseOutlook: %+v, %v; want n1 lapsed, n2's lease next, 0 < next ≤ 800 ms", o, err)
	}
	// An unreachable node's lapsed lease is still judged (it may turn
	// out down); a down or pending node's is not.
	e.exec(`UPDATE nodes SET state = 'unreachable' WHERE id = $1`, e.nodes[0].ID)
	if o, err := e.st.LeaseOutlook(t.Context()); err != nil || !o.Lapsed {
		t.Fatalf("LeaseOutlook with n1 unreachable: %+v, %v; want lapsed", o, err)
	}
	e.exec(`UPDATE nodes SET state = 'down' WHERE id = $1`, e.nodes[0].ID)
	if o, err := e.st.LeaseOutlook(t.Context()); err != nil || o.Lapsed {
		t.Fatalf("LeaseOutlook with n1 down: %+v, %v; want nothing lapsed", o, err)
	}
}

// A restart never becomes a failover: an agent that announces a restart
// (restart_hold_ms longer than the lease TTL) keeps its lease for the
// hold plus the server grace from receipt and is told lease_ttl_ms =
// hold, with a node.restarting event; during the hold its node is not
// judged even though its peers lose its paths. Once the hold has run out
// without a heartbeat, it is judged like any other node. A hold no longer
// than the TTL changes nothing; one above the maximum is refused.
func TestRestartHold(t *testing.T) {
	e := newJudgeEnv(t, 2)
	a := backstop.AgentIdentity{NodeID: e.nodes[0].ID, ClusterID: e.c.ID, NodeName: "n1"}
	lease := func() (ms int64) {
		t.Helper()
		if err := e.st.Pool().QueryRow(t.Context(), `SELECT (extract(epoch FROM lease_expires_at - last_heartbeat_at) * 1000)::bigint FROM nodes WHERE id = $1`,
			a.NodeID).Scan(&ms); err != nil {
			t.Fatal(err)
		}
		return ms
	}
	ack, err := e.st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`), RestartHold: 500 * time.Millisecond})
	if err != nil || ack.LeaseTTL != time.Second || lease() != 1250 {
		t.Fatalf("hold shorter than the TTL: ack %+v, lease %d ms, %v; want the TTL (1 s, lease 1250 ms)", ack, lease(), err)
	}
	if evs := e.nodeEvents(); len(evs) != 0 {
		t.Fatalf("events for a hold shorter than the TTL: %v", evs)
	}
	ack, err = e.st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`), RestartHold: 15 * time.Second})
	if err != nil || ack.LeaseTTL != 15*time.Second || lease() != 15250 {
		t.Fatalf("restart hold: ack %+v, lease %d ms, %v; want 15 s, lease 15250 ms", ack, lease(), err)
	}
	evs, err := e.st.ListEvents(t.Context(), backstop.EventFilter{ClusterID: e.c.ID, Type: "node.restarting", Limit: 10})
	if err != nil || len(evs) != 1 || evs[0].Severity != backstop.SeverityInfo ||
		evs[0].Message != "node n1's agent is restarting; its hierarchies stay in place for up to 15000 ms" || evs[0].Subject["node_id"] != a.NodeID {
		t.Fatalf("node.restarting events: %+v, %v", evs, err)
	}
	// The agent is gone; its peer reports its paths dead. Nothing moves.
	e.set(1, "up", "0 s", "1250 ms", map[int]string{0: "down"})
	if trs := e.judge(); len(trs) != 0 {
		t.Fatalf("transitions during the restart hold: %+v", trs)
	}
	// The hold ran out and no new agent came: down on the peer's report.
	e.exec(`UPDATE nodes SET last_heartbeat_at = now() - interval '15300 ms', lease_expires_at = now() - interval '50 ms' WHERE id = $1`, a.NodeID)
	if trs := e.judge(); len(trs) != 1 || trs[0].To != backstop.NodeDown {
		t.Fatalf("transitions after the hold: %+v, want n1 down", trs)
	}
	if _, err := e.st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`), RestartHold: backstop.MaxRestartHold + time.Millisecond}); !errors.Is(err, backstop.ErrInvalid) {
		t.Fatalf("hold above the maximum: %v, want ErrInvalid", err)
	}
}

// TestRestartHoldSurvivesAStrayHeartbeat protects "never two copies"
// across a restart: a heartbeat of the stopping agent process that reaches
// the server after its restart hold (it timed out on the agent's side)
// must not shorten the lease, since that process is gone and its fence
// guard keeps the hold's deadline; the next process's first heartbeat, or
// one that names no process, ends the hold as before.
func TestRestartHoldSurvivesAStrayHeartbeat(t *testing.T) {
	e := newJudgeEnv(t, 2)
	a := backstop.AgentIdentity{NodeID: e.nodes[0].ID, ClusterID: e.c.ID, NodeName: "n1"}
	remaining := func() (ms int64) {
		t.Helper()
		if err := e.st.Pool().QueryRow(t.Context(), `SELECT (extract(epoch FROM lease_expires_at - now()) * 1000)::bigint FROM nodes WHERE id = $1`,
			a.NodeID).Scan(&ms); err != nil {
			t.Fatal(err)
		}
		return ms
	}
	beat := func(instance string, hold time.Duration) {
		t.Helper()
		if _, err := e.st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`), RestartHold: hold, Instance: instance}); err != nil {
			t.Fatal(err)
		}
	}
	beat("old", 15*time.Second)
	beat("old", 0) // the stray one
	if ms := remaining(); ms < 14000 {
		t.Fatalf("a stray heartbeat of the stopping process cut the hold to %d ms", ms)
	}
	beat("new", 0) // the next process
	if ms := remaining(); ms > 1250 {
		t.Fatalf("the next process's heartbeat left the hold in place (%d ms left)", ms)
	}
	beat("old", 0) // no hold any more: an ordinary heartbeat
	if ms := remaining(); ms > 1250 {
		t.Fatalf("an ordinary heartbeat kept a longer lease (%d ms left)", ms)
	}
	beat("old", 15*time.Second)
	beat("", 0) // an agent that names no process
	if ms := remaining(); ms > 1250 {
		t.Fatalf("a heartbeat without an instance did not end the hold (%d ms left)", ms)
	}
}

// TestHeartbeatOfADownNodeGrantsNoLease protects "never two copies" in the
// race between a declaration and a heartbeat: a heartbeat the agent sent
// before the node was declared down, but that arrives after, must grant no
// lease (the failover may already be starting a second copy); the agent
// fences instead, and its next heartbeat gets a lease again.
func TestHeartbeatOfADownNodeGrantsNoLease(t *testing.T) {
	e := newJudgeEnv(t, 2)
	a := backstop.AgentIdentity{NodeID: e.nodes[0].ID, ClusterID: e.c.ID, NodeName: "n1"}
	e.exec(`UPDATE nodes SET state = 'down', state_since = now() WHERE id = $1`, a.NodeID)
	ack, err := e.st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`), Instance: "p"})
	if err != nil || ack.LeaseTTL != 0 || !ack.DeclaredDown {
		t.Fatalf("heartbeat of a down node: ack %+v, %v; want no lease, declared down", ack, err)
	}
	ack, err = e.st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`), Instance: "p"})
	if err != nil || ack.LeaseTTL != time.Second || ack.DeclaredDown {
		t.Fatalf("next heartbeat: ack %+v, %v; want the 1 s lease", ack, err)
	}
}
