package e2e

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// TestStarvedControlPlaneMovesNothing protects "never two copies" against
// an overloaded control plane: backstopd is frozen (SIGSTOP) in bursts
// longer than the lease (1.25 s with the grace) while the real agents run,
// so that every lease, and every peer report, lapses at once. That lapse
// is the control plane's own fault: no healthy node may be declared down
// (the detector needs a fresh peer report that does not see the node),
// nothing may move, the agents must not fence (they see a majority and
// vouch to their guards), and no two copies may run. Once the control
// plane recovers, a real node crash is still handled.
func TestStarvedControlPlaneMovesNothing(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	before := nc.placement(h)
	p := startProbe(nc, vip, 0)
	pid := nc.daemons[0].p.cmd.Process.Pid
	for burst := range 4 {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // starved: twice the lease
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// Let it catch up: every node heartbeats again.
		for i := range nc.nodes {
			nc.waitNodeState(i, "up", 30*time.Second)
		}
		t.Logf("burst %d: control plane frozen 2.5 s, every node up again", burst+1)
	}
	ok, failed := p.end()
	t.Logf("%d client requests during the starvation, %d failed", ok+failed, failed)
	if failed > 0 {
		t.Errorf("%d of %d client requests failed while only the control plane was starved: %v", failed, ok+failed, p.failures)
	}
	evs := nc.events()
	if slices.Contains(evs, "node.down") || slices.Contains(evs, "failover.started") {
		t.Fatalf("a starved control plane declared a node down or failed over: %v", evs)
	}
	if after := nc.placement(h); after.NodeID != before.NodeID || after.Epoch != before.Epoch || after.State != "in_service" {
		t.Fatalf("the hierarchy moved: before %+v, after %+v", before, after)
	}
	for i := range nc.agents {
		if n := len(nc.agents[i].logLines("event", "fenced")) + len(nc.guardLines(i, "event", "guard_fenced")); n > 0 {
			t.Errorf("node%d fenced itself while only the control plane was starved", i+1)
		}
	}
	// Recovered: a real crash is still handled.
	nc.crash(0, inv)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	inv.check(t)
}
