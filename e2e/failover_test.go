package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// newPlacedCluster is the common start of the failover scenarios: a
// cluster of n nodes, the test hierarchy "mail" (priorities node1, node2,
// node3; extra fields from extra) in service on node 1, and the
// never-two-copies checker watching its VIP.
func newPlacedCluster(t *testing.T, n int, profile string, replicas int, extra map[string]any) (*nsCluster, string, string, *invariant) {
	t.Helper()
	nc := newNSCluster(t, n, profile, replicas)
	h := nc.createHierarchy("mail", 0, []int{0, 1, 2}, extra)
	vip := nc.top.vip(0)
	inv := nc.watchInvariant(vip)
	nc.placeOn(h, 0)
	return nc, h, vip, inv
}

// placeOn brings h in service on node i by hand and waits for it.
func (nc *nsCluster) placeOn(h string, i int) {
	nc.t.Helper()
	r := nc.c.do(nc.t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/"+h+"/in-service", map[string]any{"node_id": nc.nodes[i]}).must(nc.t, 202)
	if op := nc.operation(r.header.Get("Location"), 60*time.Second); op["state"] != "succeeded" {
		nc.t.Fatalf("in-service on node%d: %v", i+1, op)
	}
}

// incidents returns the cluster's incidents.
func (nc *nsCluster) incidents() []map[string]any {
	var l struct {
		Items []map[string]any `json:"items"`
	}
	nc.c.do(nc.t, "GET", "/v1/clusters/"+nc.id+"/incidents", nil).must(nc.t, 200).decode(nc.t, &l)
	return l.Items
}

// hasEvents fails t unless every type appears in the event log, in order.
func (nc *nsCluster) hasEvents(types ...string) {
	nc.t.Helper()
	evs := nc.events()
	i := 0
	for _, e := range evs {
		if i < len(types) && e == types[i] {
			i++
		}
	}
	if i < len(types) {
		nc.t.Errorf("events %v lack %v in this order", evs, types)
	}
}

// TestFailoverNodeCrash: node 1 crashes (agent and service SIGKILLed,
// links down) → the hierarchy fails over to priority 2, recorded as an
// incident with its timeline, and the VIP answers from node 2.
func TestFailoverNodeCrash(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	crashed := time.Now()
	nc.crash(0, inv)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	t.Logf("node crash → service answering on node2 through the VIP: %v", time.Since(crashed))
	inc := nc.incidents()
	if len(inc) != 1 || inc[0]["kind"] != "failover" || inc[0]["state"] != "resolved" || inc[0]["recovery_ms"] == nil {
		t.Fatalf("incidents: %v", inc)
	}
	nc.hasEvents("node.down", "failover.started", "hierarchy.in_service", "failover.completed")
	// The node comes back empty: it is up again, the hierarchy stays on
	// node 2 (intelligent switchback) and a switchback is noted.
	nc.reboot(0, inv)
	nc.waitNodeState(0, "up", 30*time.Second)
	testkit.Eventually(t, 0, "a switchback.possible event", func() bool { return slices.Contains(nc.events(), "switchback.possible") })
	if p := nc.placement(h); p.NodeID != nc.nodes[1] {
		t.Fatalf("intelligent switchback moved the hierarchy: %+v", p)
	}
	// The rebooted agent found its old state "in service" and must have
	// given it up (relinquished it on the configuration, or fenced it when
	// its first heartbeat was answered "declared down"), or refused to
	// restart it; never restarted it.
	testkit.Eventually(t, 0, "node1's agent giving up its stale hierarchy", func() bool {
		a := nc.agents[0]
		return len(a.logLines("event", "relinquished"))+len(a.logLines("event", "declared_down"))+
			len(a.logLines("event", "local_recovery_withheld")) > 0
	})
	if n := len(nc.agents[0].logLines("event", "local_restart")); n > 0 {
		t.Errorf("the rebooted node restarted resources %d times", n)
	}
	inv.check(t)
}

// TestFailoverNetworkLoss: node 1's veths go down → failover to node 2;
// when the link comes back node 1 has fenced itself and nothing runs
// twice.
func TestFailoverNetworkLoss(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	nc.top.setLink(0, false)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	if got := nc.top.holders(vip); slices.Contains(got, 0) {
		t.Errorf("node1 still holds the VIP while cut off: %v", got)
	}
	nc.hasEvents("path.down", "node.down", "failover.started")
	nc.top.setLink(0, true)
	nc.waitNodeState(0, "up", 30*time.Second)
	time.Sleep(2 * time.Second) // watch for a second copy after the link returns
	if got := nc.top.listeners(vip, 7000); !slices.Equal(got, []int{1}) {
		t.Errorf("service running on %v after the link returned, want only node2", got)
	}
	inv.check(t)
}

// TestFailoverServiceKilled: the service killed once is restarted locally
// (no failover); killed past max_restarts (2) the hierarchy fails on node
// 1, is marked failed there, and fails over to node 2.
func TestFailoverServiceKilled(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	answers := func(i int) func() bool {
		return func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[i].ns }
	}
	for k := 1; k <= 2; k++ {
		if nc.killService(0) != 1 {
			t.Fatal("no service process on node1")
		}
		testkit.Eventually(t, 0, "a local restart on node1", answers(0))
		if p := nc.placement(h); p.NodeID != nc.nodes[0] {
			t.Fatalf("kill %d moved the hierarchy: %+v", k, p)
		}
	}
	nc.killService(0)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", answers(1))
	var ex struct {
		FailedMarks []struct {
			NodeID string `json:"node_id"`
		} `json:"failed_marks"`
		LastDecision struct {
			Kind string `json:"kind"`
		} `json:"last_decision"`
	}
	nc.c.do(t, "GET", "/v1/clusters/"+nc.id+"/hierarchies/"+h+"/explain", nil).must(t, 200).decode(t, &ex)
	if len(ex.FailedMarks) != 1 || ex.FailedMarks[0].NodeID != nc.nodes[0] || ex.LastDecision.Kind != "failover" {
		t.Fatalf("explain after the failure: %+v", ex)
	}
	nc.hasEvents("hierarchy.failed", "failover.started", "failover.completed")
	evs := strings.Join(nc.events(), " ")
	if !strings.Contains(evs, "local_recovery.s") || !strings.Contains(evs, "local_recovery.failed") {
		t.Errorf("events %s lack local recovery events", evs)
	}
	inv.check(t)
}

// TestFailoverCascade: nodes 1 and 2 both crash → priority 3.
func TestFailoverCascade(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	nc.crash(1, inv)
	nc.waitNodeState(1, "down", 30*time.Second)
	nc.crash(0, inv)
	nc.waitPlaced(h, 2, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node3", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[2].ns })
	inv.check(t)
}

// TestFailoverNPlusOne: three hierarchies of one exclusivity group on four
// nodes (three primaries, one shared backup). Two primaries fail: the first
// hierarchy takes the backup, the second is failed with the exclusivity
// reason.
func TestFailoverNPlusOne(t *testing.T) {
	nc := newNSCluster(t, 4, "lan", 1)
	group := map[string]any{"exclusivity_group": "exchange"}
	hs := []string{
		nc.createHierarchy("ex1", 0, []int{0, 3}, group),
		nc.createHierarchy("ex2", 1, []int{1, 3}, group),
		nc.createHierarchy("ex3", 2, []int{2, 3}, group),
	}
	for i, h := range hs {
		nc.placeOn(h, i)
	}
	// Ask first what would happen, changing nothing.
	var sim struct {
		Decisions []struct {
			HierarchyID string `json:"hierarchy_id"`
			Kind        string `json:"kind"`
			ToNodeID    string `json:"to_node_id"`
		} `json:"decisions"`
		Placements []struct {
			HierarchyID string `json:"hierarchy_id"`
			NodeID      string `json:"node_id"`
			State       string `json:"state"`
		} `json:"placements"`
	}
	nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/simulate", map[string]any{"node_failures": []string{nc.nodes[0], nc.nodes[1]}}).must(t, 200).decode(t, &sim)
	if len(sim.Decisions) != 2 || sim.Decisions[0].Kind != "failover" || sim.Decisions[0].ToNodeID != nc.nodes[3] || sim.Decisions[1].Kind != "fail" {
		t.Fatalf("simulated decisions: %+v", sim.Decisions)
	}
	if len(sim.Placements) != 3 {
		t.Fatalf("simulated placements: %+v", sim.Placements)
	}
	for i, h := range hs {
		if p := nc.placement(h); p.NodeID != nc.nodes[i] || p.State != "in_service" {
			t.Fatalf("the simulation changed %s: %+v", h, p)
		}
	}
	nc.crash(0, nil)
	nc.waitPlaced(hs[0], 3, 30*time.Second)
	nc.crash(1, nil)
	testkit.Eventually(t, 30*time.Second, "ex2 failed", func() bool { return nc.placement(hs[1]).State == "failed" })
	if p := nc.placement(hs[1]); !strings.Contains(p.Detail, `exclusivity group "exchange" already runs "ex1"`) {
		t.Fatalf("ex2 failed without the exclusivity reason: %+v", p)
	}
	if p := nc.placement(hs[2]); p.NodeID != nc.nodes[2] || p.State != "in_service" {
		t.Fatalf("ex3 moved: %+v", p)
	}
	nc.hasEvents("hierarchy.failed")
}

// TestSwitchoverMaintenanceSwitchback: maintenance drains a node (its
// hierarchy switched over in two signed steps, an incident each); a
// switchover to a node in maintenance is refused with the reason; ending
// maintenance with the automatic policy moves the hierarchy back to the
// higher-priority node; with the intelligent policy an operator's
// switchover to a lower-priority node stays, and a switchback is only
// noted.
func TestSwitchoverMaintenanceSwitchback(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, map[string]any{"switchback": "automatic"})
	hp := "/v1/clusters/" + nc.id + "/hierarchies/" + h
	np := "/v1/clusters/" + nc.id + "/nodes/"
	drain := func(i, to int) {
		t.Helper()
		var mr struct {
			Operations []map[string]any `json:"operations"`
		}
		nc.c.do(t, "PUT", np+nc.nodes[i]+"/maintenance?wait=true&timeout_s=60", nil).must(t, 200).decode(t, &mr)
		if len(mr.Operations) != 1 || mr.Operations[0]["state"] != "succeeded" {
			t.Fatalf("maintenance on node%d did not drain it: %v", i+1, mr.Operations)
		}
		nc.waitPlaced(h, to, 30*time.Second)
		testkit.Eventually(t, 0, "the VIP answering after the drain", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[to].ns })
	}
	drain(0, 1)
	drain(1, 2)
	if p := nc.c.do(t, "POST", hp+"/switchover", map[string]any{"node_id": nc.nodes[0]}).must(t, 422).problem(t); !strings.Contains(p.Detail, "in maintenance") {
		t.Errorf("switchover to a node in maintenance: %s", p.Detail)
	}
	// Automatic switchback: node 1 (priority 1) is back.
	nc.c.do(t, "DELETE", np+nc.nodes[0]+"/maintenance", nil).must(t, 200)
	nc.waitPlaced(h, 0, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node1", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[0].ns })
	// Intelligent: an explicit switchover to priority 3 stays there.
	nc.c.do(t, "DELETE", np+nc.nodes[1]+"/maintenance", nil).must(t, 200)
	nc.c.do(t, "PATCH", hp, map[string]any{"switchback": "intelligent"}).must(t, 200)
	r := nc.c.do(t, "POST", hp+"/switchover", map[string]any{"node_id": nc.nodes[2]}).must(t, 202)
	if op := nc.operation(r.header.Get("Location"), 60*time.Second); op["state"] != "succeeded" {
		t.Fatalf("switchover: %v", op)
	}
	nc.waitPlaced(h, 2, 10*time.Second)
	testkit.Eventually(t, 0, "a switchback.possible event", func() bool { return slices.Contains(nc.events(), "switchback.possible") })
	time.Sleep(time.Second)
	if p := nc.placement(h); p.NodeID != nc.nodes[2] {
		t.Fatalf("intelligent switchback moved the hierarchy off node3: %+v", p)
	}
	kinds := map[string]int{}
	for _, in := range nc.incidents() {
		kinds[in["kind"].(string)]++
		if in["state"] != "resolved" || in["stopped_at"] == nil || in["started_at"] == nil {
			t.Errorf("incident not resolved with a stop and a start: %v", in)
		}
	}
	if kinds["switchover"] != 3 || kinds["switchback"] != 1 {
		t.Errorf("incidents by kind %v, want 3 switchovers and 1 switchback", kinds)
	}
	inv.check(t)
}

// TestLeaderKilled: two backstopd replicas; SIGKILL the leader → the other
// leads with a higher term, no hierarchy moves during the handover, and a
// node crash right after is still handled.
func TestLeaderKilled(t *testing.T) {
	nc, h, _, inv := newPlacedCluster(t, 3, "lan", 2, nil)
	var cp struct {
		Term     int64  `json:"term"`
		LeaderID string `json:"leader_id"`
		Replicas []struct {
			ID      string `json:"id"`
			Address string `json:"address"`
			Leader  bool   `json:"leader"`
		} `json:"replicas"`
	}
	testkit.Eventually(t, 0, "both replicas registered", func() bool {
		nc.c.do(t, "GET", "/v1/control-plane", nil).must(t, 200).decode(t, &cp)
		return len(cp.Replicas) == 2
	})
	lead, other := -1, -1
	for i, d := range nc.daemons {
		for _, r := range cp.Replicas {
			if r.Leader && r.Address == d.addr {
				lead = i
			}
		}
	}
	if lead < 0 {
		t.Fatalf("no replica leads: %+v", cp)
	}
	other = 1 - lead
	before := nc.placement(h)
	oldTerm := cp.Term
	nc.daemons[lead].p.abandoned = true // killed on purpose: not a graceful stop
	_ = nc.daemons[lead].p.cmd.Process.Kill()
	nc.c = nc.daemons[other].client(adminSecret)
	testkit.Eventually(t, 15*time.Second, "the other replica leading", func() bool {
		nc.c.do(t, "GET", "/v1/control-plane", nil).must(t, 200).decode(t, &cp)
		return cp.Term > oldTerm && cp.LeaderID != ""
	})
	time.Sleep(3 * time.Second) // a grace period and more: nothing may move
	if p := nc.placement(h); p.Epoch != before.Epoch || p.NodeID != before.NodeID || p.State != "in_service" {
		t.Fatalf("the hierarchy moved during the leader handover: before %+v, after %+v", before, p)
	}
	nc.crash(0, inv)
	nc.waitPlaced(h, 1, 30*time.Second)
	inv.check(t)
}

// TestUnreachableNothingMoves: node 1 loses the control plane but its
// peers still see it: it is unreachable, nothing moves, and its service
// keeps serving (checked from node 2).
func TestUnreachableNothingMoves(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	ipCmd(t, "-n", nc.top.nodes[0].ns, "route", "add", "blackhole", nc.top.hostAddr()+"/32")
	nc.waitNodeState(0, "unreachable", 30*time.Second)
	time.Sleep(2 * time.Second)
	if p := nc.placement(h); p.NodeID != nc.nodes[0] || p.State != "in_service" {
		t.Fatalf("the hierarchy moved off an unreachable node: %+v", p)
	}
	if g := nc.dialFrom(1, vip); g != "hello from "+nc.top.nodes[0].ns {
		t.Fatalf("from node2 the VIP answers %q, want node1's service", g)
	}
	nc.hasEvents("node.unreachable")
	ipCmd(t, "-n", nc.top.nodes[0].ns, "route", "del", "blackhole", nc.top.hostAddr()+"/32")
	nc.waitNodeState(0, "up", 30*time.Second)
	inv.check(t)
}

// TestTimingProfileChangesLive: switching a cluster from lan to fast
// reaches the running agents without a restart (they apply the new
// heartbeat and lease), and a crash is then handled on the fast profile.
func TestTimingProfileChangesLive(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	pids := make([]int, len(nc.agents))
	for i, a := range nc.agents {
		pids[i] = a.cmd.Process.Pid
	}
	nc.c.do(t, "PATCH", "/v1/clusters/"+nc.id, map[string]any{"timing_profile": "fast"}).must(t, 200)
	for i, a := range nc.agents {
		testkit.Eventually(t, 0, "node"+string(rune('1'+i))+" applying the fast profile", func() bool {
			for _, l := range a.logLines("event", "config_applied") {
				if l["heartbeat_ms"] == float64(50) && l["lease_ttl_ms"] == float64(250) {
					return true
				}
			}
			return false
		})
		if a.cmd.Process.Pid != pids[i] {
			t.Fatalf("node%d's agent was restarted", i+1)
		}
	}
	crashed := time.Now()
	nc.crash(0, inv)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	t.Logf("fast profile: node crash → service answering on node2: %v", time.Since(crashed))
	inv.check(t)
}
