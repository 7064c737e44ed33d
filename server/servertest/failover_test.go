package servertest_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/server/servertest"
	"github.com/backstop-ha/backstop/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

// placed is the common start of the scenarios: a 3-node cluster with
// hierarchy "mail" (priorities node1, node2, node3) in service on node1.
// The profile is lan, as in the namespace suite: the fast one (a path is
// dead after 150 ms) is tighter than a loaded machine running -race keeps,
// and its nodes then rightly fence themselves, which is not the scenario.
func placed(t *testing.T) *servertest.Harness {
	t.Helper()
	h := servertest.New(t, servertest.Options{Nodes: 3, Profile: "lan"})
	h.CreateHierarchy(servertest.HierarchySpec{Name: "mail"})
	h.BringInService("mail", 0)
	h.WaitPlaced("mail", 0)
	if n := h.ExactlyOneCopy("mail"); n != 0 {
		t.Fatalf("mail runs on node%d, want node1", n+1)
	}
	return h
}

// Node 1 crashes (its resources, agent and path heartbeats stop at once):
// its peers lose it, its lease runs out, it is down, and the hierarchy
// fails over to priority 2, never running twice.
func TestFailoverOnNodeCrash(t *testing.T) {
	h := placed(t)
	h.CrashNode(0)
	h.WaitNodeState(0, "down")
	h.WaitPlaced("mail", 1)
	if n := h.ExactlyOneCopy("mail"); n != 1 {
		t.Fatalf("mail runs on node%d after the failover, want node2", n+1)
	}
	h.HasEvents("node.down", "failover.started", "failover.completed")

	// The node comes back empty: it is up again and the hierarchy stays
	// on node 2 (intelligent switchback).
	h.StartAgent(0)
	h.WaitNodeState(0, "up")
	h.EveryAgentSeesEveryPeer()
	if p := h.Placement("mail"); p.Node != 1 || p.State != "in_service" {
		t.Fatalf("after node1 rebooted: %+v", p)
	}
	h.ExactlyOneCopy("mail")
}

// Node 1 loses the control plane but not its peers: it is unreachable,
// not down, it keeps its hierarchy (a majority sees it, so it does not
// fence itself) and nothing moves; once the link heals it is up again.
func TestControlPlanePartitionMovesNothing(t *testing.T) {
	h := placed(t)
	before := h.Placement("mail")
	h.PartitionAgentFromControlPlane(0)
	h.WaitNodeState(0, "unreachable")
	h.WaitEvent("node.unreachable")
	// Let the engine judge the node again and again on fresh reports of
	// the peers, which still see it: many heartbeats, each a pass.
	h.EveryAgentSeesEveryPeer()
	h.EveryAgentSeesEveryPeer()
	if s := h.NodeState(0); s != "unreachable" {
		t.Fatalf("node1 %s while partitioned, want unreachable", s)
	}
	if p := h.Placement("mail"); p.Node != 0 || p.Epoch != before.Epoch {
		t.Fatalf("the hierarchy moved while node1 was only unreachable: %+v, was %+v", p, before)
	}
	if n := h.ExactlyOneCopy("mail"); n != 0 {
		t.Fatalf("mail runs on node%d, want node1", n+1)
	}
	if slices.Contains(h.Events(), "failover.started") {
		t.Fatalf("a failover started: %v", h.Events())
	}

	h.HealPartition(0)
	h.WaitNodeState(0, "up")
	if p := h.Placement("mail"); p.Node != 0 || p.State != "in_service" || p.Epoch != before.Epoch {
		t.Fatalf("after the partition healed: %+v, was %+v", p, before)
	}
	h.ExactlyOneCopy("mail")
}

// The service fails its checks on node 1 for good: local recovery
// restarts it twice (its budget), then the hierarchy is failed there and
// fails over to node 2.
func TestFailoverOnFailingChecks(t *testing.T) {
	h := placed(t)
	h.FailChecks(0, "mail", "svc")
	h.WaitPlaced("mail", 1)
	if n := h.ExactlyOneCopy("mail"); n != 1 {
		t.Fatalf("mail runs on node%d after the failover, want node2", n+1)
	}
	if n := h.Nodes[0].Kit.Starts(h.HierarchyID("mail"), "svc"); n != 3 {
		t.Errorf("svc started %d times on node1, want 3 (once, then 2 local restarts)", n)
	}
	h.HasEvents("hierarchy.failed", "failover.started", "failover.completed")
	if s := h.NodeState(0); s != "up" {
		t.Errorf("node1 %s, want up: a failed resource is no failed node", s)
	}
}

// Node 1's agent stops cleanly (an upgrade) with a restart hold: its
// peers lose its path heartbeats, but the control plane holds its lease,
// so nothing moves; the next agent process takes over the running
// hierarchy.
func TestCleanStopWithRestartHoldMovesNothing(t *testing.T) {
	h := servertest.New(t, servertest.Options{Nodes: 3, Profile: "lan", RestartHold: 30 * time.Second})
	h.CreateHierarchy(servertest.HierarchySpec{Name: "mail"})
	h.BringInService("mail", 0)
	h.WaitPlaced("mail", 0)
	before := h.Placement("mail")

	h.StopAgent(0)
	h.WaitPeersSee(0, "down")
	// Fresh reports of the peers, each an engine pass, with node1 silent.
	h.EveryAgentSeesEveryPeer()
	h.EveryAgentSeesEveryPeer()
	if s := h.NodeState(0); s == "down" {
		t.Fatalf("node1 down during its restart hold")
	}
	if p := h.Placement("mail"); p.Node != 0 || p.Epoch != before.Epoch {
		t.Fatalf("the hierarchy moved during the restart hold: %+v, was %+v", p, before)
	}
	if n := h.ExactlyOneCopy("mail"); n != 0 {
		t.Fatalf("mail runs on node%d, want node1 (an agent stop leaves resources running)", n+1)
	}

	h.StartAgent(0)
	h.WaitNodeState(0, "up")
	h.EveryAgentSeesEveryPeer()
	if p := h.Placement("mail"); p.Node != 0 || p.State != "in_service" || p.Epoch != before.Epoch {
		t.Fatalf("after the agent restarted: %+v, was %+v", p, before)
	}
	h.ExactlyOneCopy("mail")
}

// Nodes 1 and 2 crash one after the other: the hierarchy cascades to
// priority 3.
func TestFailoverCascade(t *testing.T) {
	h := placed(t)
	h.CrashNode(1)
	h.WaitNodeState(1, "down")
	if p := h.Placement("mail"); p.Node != 0 {
		t.Fatalf("node2's crash moved the hierarchy off node1: %+v", p)
	}
	h.CrashNode(0)
	h.WaitPlaced("mail", 2)
	if n := h.ExactlyOneCopy("mail"); n != 2 {
		t.Fatalf("mail runs on node%d, want node3", n+1)
	}
}
