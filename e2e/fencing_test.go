package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/internal/redfish"
	"github.com/backstop-ha/backstop/e2e/testkit"
)

// Peer fencing through real fence devices: the unmodified fence_redfish
// of Debian's fence-agents, run by the leader backstopd, against one
// emulated Redfish BMC per node (package redfish) whose ForceOff kills
// every process of the node's namespace and takes its links down.

const fenceRedfish = "/usr/sbin/fence_redfish"

func requireFenceRedfish(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(fenceRedfish); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: CI installs fence-agents (.ci/run)", fenceRedfish)
		}
		t.Skipf("%s is missing: install Debian's fence-agents (apt-get install fence-agents) to run the peer fencing tests", fenceRedfish)
	}
}

const (
	bmcUser     = "fencer"
	bmcPassword = "bmc-Secret-4711"
)

// startBMCs gives every node an emulated BMC on the host's address of the
// test network (the daemons' side) and configures it as the node's fence
// device. Powering a node off kills its namespace's processes, takes its
// links down and stops counting it in the never-two-copies check (a
// machine without power holds nothing; its namespace's addresses stay
// configured until reboot).
func (nc *nsCluster) startBMCs(inv *invariant, systemsURI bool) []*redfish.BMC {
	nc.t.Helper()
	var bmcs []*redfish.BMC
	for i := range nc.nodes {
		off := func() {
			if inv != nil {
				inv.exclude(i)
			}
			nc.agents[i].kill()
			killNamespace(nc.top.nodes[i].ns)
			if err := nc.top.lab.SetLink(i, false); err != nil {
				nc.t.Errorf("BMC of node%d: links down: %v", i+1, err)
			}
		}
		b, err := redfish.Start(nc.top.hostAddr(), bmcUser, bmcPassword, off, nil)
		if err != nil {
			nc.t.Fatal(err)
		}
		nc.t.Cleanup(b.Close)
		params := map[string]string{"ip": b.Host(), "ipport": fmt.Sprint(b.Port()), "username": bmcUser, "ssl_insecure": "1"}
		if systemsURI {
			params["systems_uri"] = redfish.SystemURI
		}
		var d struct {
			Agent   string            `json:"agent"`
			Params  map[string]string `json:"params"`
			Secrets []string          `json:"secret_params_set"`
		}
		r := nc.c.do(nc.t, "PUT", "/v1/clusters/"+nc.id+"/nodes/"+nc.nodes[i]+"/fence-device", map[string]any{
			"agent": "fence_redfish", "params": params, "secret_params": map[string]string{"password": bmcPassword}, "timeout_s": 10,
		}).must(nc.t, 200)
		r.decode(nc.t, &d)
		if strings.Contains(string(r.body), bmcPassword) || !slices.Equal(d.Secrets, []string{"password"}) {
			nc.t.Fatalf("fence device answer shows the secret or lacks its name: %s", r.body)
		}
		bmcs = append(bmcs, b)
	}
	return bmcs
}

type eventRecord struct {
	Type     string         `json:"type"`
	Severity string         `json:"severity"`
	Message  string         `json:"message"`
	Details  map[string]any `json:"details"`
	At       time.Time      `json:"at"`
}

// eventsOf returns the cluster's events of one type, oldest first.
func (nc *nsCluster) eventsOf(typ string) []eventRecord {
	var l struct {
		Items []eventRecord `json:"items"`
	}
	nc.c.do(nc.t, "GET", "/v1/clusters/"+nc.id+"/events?limit=1000&type="+typ, nil).must(nc.t, 200).decode(nc.t, &l)
	return l.Items
}

// forceOffs returns the authorized ForceOffs a BMC carried out.
func forceOffs(b *redfish.BMC) []redfish.Reset {
	var out []redfish.Reset
	for _, r := range b.Resets() {
		if r.Type == "ForceOff" {
			out = append(out, r)
		}
	}
	return out
}

// TestFenceRedfishNodeCrash: node 1 crashes with fence_redfish
// configured. The leader fences it through its BMC (ForceOff with the
// configured credentials, then status off) before anything moves; then
// the hierarchy fails over to node 2 and the VIP answers from there.
func TestFenceRedfishNodeCrash(t *testing.T) {
	requireFenceRedfish(t)
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	bmcs := nc.startBMCs(inv, true)
	crashed := time.Now()
	nc.crash(0, inv)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	took := time.Since(crashed)

	offs := forceOffs(bmcs[0])
	if len(offs) != 1 || offs[0].User != bmcUser || offs[0].Password != bmcPassword || !offs[0].Authorized {
		t.Fatalf("node1's BMC got %+v, want one ForceOff with the configured credentials", bmcs[0].Resets())
	}
	for i, b := range bmcs[1:] {
		if rs := b.Resets(); len(rs) != 0 {
			t.Errorf("node%d's BMC was reset: %+v", i+2, rs)
		}
	}
	nc.hasEvents("node.down", "fence.succeeded", "failover.started", "hierarchy.in_service", "failover.completed")
	down, fenced, started := nc.eventsOf("node.down"), nc.eventsOf("fence.succeeded"), nc.eventsOf("failover.started")
	if len(fenced) != 1 || fenced[0].Details["agent"] != "fence_redfish" || fenced[0].Details["duration_ms"] == nil {
		t.Fatalf("fence.succeeded events: %+v", fenced)
	}
	if len(started) != 1 || started[0].At.Before(fenced[0].At) || offs[0].At.After(fenced[0].At) {
		t.Fatalf("the failover started (%v) before the fence was confirmed (%v, ForceOff at %v)", started, fenced[0].At, offs[0].At)
	}
	if len(nc.eventsOf("fence.failed")) != 0 {
		t.Errorf("fence.failed events: %+v", nc.eventsOf("fence.failed"))
	}
	t.Logf("node crash → service answering on node2 through the VIP, fenced with fence_redfish: %v (down → fenced %v, fence %v ms)",
		took, fenced[0].At.Sub(down[0].At).Round(time.Millisecond), fenced[0].Details["duration_ms"])
	if inc := nc.incidents(); len(inc) != 1 || inc[0]["fenced_at"] == nil {
		t.Errorf("the incident does not show the fence: %v", inc)
	}
	var dev struct {
		LastFencedAt *time.Time `json:"last_fenced_at"`
	}
	nc.c.do(t, "GET", "/v1/clusters/"+nc.id+"/nodes/"+nc.nodes[0]+"/fence-device", nil).must(t, 200).decode(t, &dev)
	if dev.LastFencedAt == nil {
		t.Errorf("the fence device does not show the fence")
	}
	inv.check(t)
}

// TestFenceDeviceNotAnswering: node 1's BMC answers every request with
// 500. Node 1 is declared down, every fence fails (critical fence.failed
// events, retried with backoff) and the hierarchy does not move: it stays
// placed on node 1 for as long as the fence is not confirmed. Once the BMC
// works again the next retry fences the node and the failover completes.
func TestFenceDeviceNotAnswering(t *testing.T) {
	requireFenceRedfish(t)
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	bmcs := nc.startBMCs(inv, false)
	before := nc.placement(h)
	bmcs[0].SetBroken(500)
	nc.crash(0, inv)
	nc.waitNodeState(0, "down", 30*time.Second)
	testkit.Eventually(t, 15*time.Second, "two fence.failed events", func() bool { return len(nc.eventsOf("fence.failed")) >= 2 })
	hold := time.Now().Add(5 * time.Second)
	for time.Now().Before(hold) {
		if p := nc.placement(h); p.NodeID != before.NodeID || p.Epoch != before.Epoch {
			t.Fatalf("the hierarchy moved off a node that was not fenced: %+v (was %+v)", p, before)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	failed := nc.eventsOf("fence.failed")
	if f := failed[0]; f.Severity != "critical" || f.Details["agent"] != "fence_redfish" || !strings.Contains(fmt.Sprint(f.Details["detail"]), "exited 1") {
		t.Fatalf("fence.failed: %+v", f)
	}
	for _, f := range failed {
		if strings.Contains(f.Message, bmcPassword) || strings.Contains(fmt.Sprint(f.Details), bmcPassword) {
			t.Fatalf("a fence.failed event shows the BMC password: %+v", f)
		}
	}
	if n := len(failed); n > 5 {
		t.Errorf("%d fence attempts in about 7 s: the retries do not back off", n)
	}
	if len(forceOffs(bmcs[0])) != 0 || slices.Contains(nc.events(), "failover.started") {
		t.Fatalf("a fence or failover happened through a broken BMC: %+v", bmcs[0].Resets())
	}
	t.Logf("%d failed fences; the hierarchy stayed on node1 for 5 s after the second", len(failed))

	fixed := time.Now()
	bmcs[0].SetBroken(0)
	nc.waitPlaced(h, 1, 60*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	t.Logf("BMC fixed → service answering on node2: %v", time.Since(fixed))
	if offs := forceOffs(bmcs[0]); len(offs) != 1 || !offs[0].Authorized {
		t.Fatalf("node1's BMC got %+v, want one authorized ForceOff", bmcs[0].Resets())
	}
	nc.hasEvents("node.down", "fence.failed", "fence.failed", "fence.succeeded", "failover.started", "failover.completed")
	inv.check(t)
}
