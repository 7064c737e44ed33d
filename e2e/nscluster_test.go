package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/internal/nslab"
	"github.com/backstop-ha/backstop/e2e/testkit"
)

// nsCluster is a whole test cluster: backstopd on the host, one agent per
// node namespace, enrolled, with communication paths between every pair.
type nsCluster struct {
	t       *testing.T
	top     *netTopology
	dbURL   string
	daemons []*daemon
	c       *client
	id      string
	nodes   []string // node ids, index = namespace index
	agents  []*agentProc
	tokens  []string
}

// newNSCluster builds a cluster of n nodes with the given timing profile,
// served by `replicas` backstopd processes sharing one database.
func newNSCluster(t *testing.T, n int, profile string, replicas int) *nsCluster {
	t.Helper()
	return newNSClusterWith(t, n, profile, replicas, nil)
}

// newNSClusterWith is newNSCluster whose node i's agent starts with
// binds(i) mounted in its private mount namespace (nil: none).
func newNSClusterWith(t *testing.T, n int, profile string, replicas int, binds func(i int) [][2]string) *nsCluster {
	t.Helper()
	requireRoot(t)
	top := newTopology(t, n)
	nc := &nsCluster{t: t, top: top, dbURL: newDatabase(t)}
	for i := range replicas {
		nc.daemons = append(nc.daemons, startDaemonOn(t, fmt.Sprintf("backstopd-%d", i+1), nc.dbURL, adminSecret, top.hostAddr()))
	}
	nc.c = nc.daemons[0].client(adminSecret)
	var cl struct {
		ID string `json:"id"`
	}
	nc.c.do(t, "POST", "/v1/clusters", map[string]any{"name": "e2e-" + top.id, "timing_profile": profile}).must(t, 201).decode(t, &cl)
	nc.id = cl.ID
	for i := range n {
		var nd struct {
			ID    string `json:"id"`
			Token string `json:"enrollment_token"`
		}
		nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/nodes", map[string]any{"name": fmt.Sprintf("node%d", i+1)}).must(t, 201).decode(t, &nd)
		nc.nodes, nc.tokens = append(nc.nodes, nd.ID), append(nc.tokens, nd.Token)
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/paths", map[string]any{
				"a": map[string]any{"node_id": nc.nodes[i], "address": top.nodes[i].addr},
				"b": map[string]any{"node_id": nc.nodes[j], "address": top.nodes[j].addr},
			}).must(t, 201)
		}
	}
	for i := range n {
		var b [][2]string
		if binds != nil {
			b = binds(i)
		}
		nc.agents = append(nc.agents, startAgent(t, fmt.Sprintf("node%d", i+1), top.nodes[i], nc.servers(), nc.tokens[i], b...))
	}
	for i := range n {
		nc.waitNodeState(i, "up", 60*time.Second)
	}
	// A formed cluster: every agent hears every peer over its path (the
	// state a real cluster is in long before anything fails).
	for i, a := range nc.agents {
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("node%d's paths to its %d peers up", i+1, n-1), func() bool {
			return len(a.logLines("event", "path_up")) >= n-1
		})
	}
	return nc
}

// servers is the agents' --server list: every replica.
func (nc *nsCluster) servers() string {
	var urls []string
	for _, d := range nc.daemons {
		urls = append(urls, d.url())
	}
	return strings.Join(urls, ",")
}

func (nc *nsCluster) nodeState(i int) string {
	var n struct {
		State string `json:"state"`
	}
	nc.c.do(nc.t, "GET", "/v1/clusters/"+nc.id+"/nodes/"+nc.nodes[i], nil).must(nc.t, 200).decode(nc.t, &n)
	return n.State
}

func (nc *nsCluster) waitNodeState(i int, state string, d time.Duration) {
	nc.t.Helper()
	testkit.Eventually(nc.t, d, fmt.Sprintf("node%d %s", i+1, state), func() bool { return nc.nodeState(i) == state })
}

// createHierarchy creates the test hierarchy: a virtual IP on eth0 (eth1
// as backup) ← a bind-mounted volume ← the tcpecho service on the VIP.
// prios lists node indexes, priority 1 first.
func (nc *nsCluster) createHierarchy(name string, vip int, prios []int, extra map[string]any) string {
	nc.t.Helper()
	addr := nc.top.vip(vip)
	var ps []map[string]any
	for i, n := range prios {
		ps = append(ps, map[string]any{"node_id": nc.nodes[n], "priority": i + 1})
	}
	src := nc.t.TempDir()
	spec := map[string]any{
		"name": name,
		"resources": []map[string]any{
			{"name": "vip", "kind": "ip", "params": map[string]any{"address": addr + "/24", "interface": "eth0", "backup_interfaces": []string{"eth1"}}},
			{"name": "data", "kind": "volume", "params": map[string]any{"source": src, "target": "/srv/backstop-e2e-" + name}, "depends_on": []string{"vip"}},
			{"name": "svc", "kind": "service", "params": map[string]any{
				"start":           fmt.Sprintf(`exec %s --listen %s:7000 --name "$(ip netns identify $$)"`, env.tcpecho, addr),
				"stop_timeout_ms": 2000,
			}, "depends_on": []string{"data"},
				"quick_check":    map[string]any{"interval_ms": 200, "timeout_ms": 150},
				"local_recovery": map[string]any{"max_restarts": 2, "window_s": 300}},
		},
		"priorities": ps,
	}
	for k, v := range extra {
		spec[k] = v
	}
	var h struct {
		ID string `json:"id"`
	}
	nc.c.do(nc.t, "POST", "/v1/clusters/"+nc.id+"/hierarchies", spec).must(nc.t, 201).decode(nc.t, &h)
	return h.ID
}

type placement struct {
	NodeID string `json:"node_id"`
	State  string `json:"state"`
	Epoch  int64  `json:"epoch"`
	Detail string `json:"detail"`
}

func (nc *nsCluster) placement(h string) placement {
	var x struct {
		Placement placement `json:"placement"`
	}
	nc.c.do(nc.t, "GET", "/v1/clusters/"+nc.id+"/hierarchies/"+h, nil).must(nc.t, 200).decode(nc.t, &x)
	return x.Placement
}

// nodeIndex returns the namespace index of a node id, or -1.
func (nc *nsCluster) nodeIndex(id string) int {
	for i, n := range nc.nodes {
		if n == id {
			return i
		}
	}
	return -1
}

// waitPlaced waits until h is in service on node i.
func (nc *nsCluster) waitPlaced(h string, i int, d time.Duration) {
	nc.t.Helper()
	testkit.Eventually(nc.t, d, fmt.Sprintf("hierarchy in service on node%d", i+1), func() bool {
		p := nc.placement(h)
		return p.State == "in_service" && p.NodeID == nc.nodes[i]
	})
}

// operation polls an operation until it ends and returns it.
func (nc *nsCluster) operation(path string, d time.Duration) map[string]any {
	nc.t.Helper()
	var op map[string]any
	testkit.Eventually(nc.t, d, "operation "+path, func() bool {
		op = nil
		nc.c.do(nc.t, "GET", path, nil).must(nc.t, 200).decode(nc.t, &op)
		return op["state"] == "succeeded" || op["state"] == "failed"
	})
	return op
}

// events returns the cluster's event types in order.
func (nc *nsCluster) events() []string {
	var l struct {
		Items []struct {
			Type string `json:"type"`
		} `json:"items"`
	}
	nc.c.do(nc.t, "GET", "/v1/clusters/"+nc.id+"/events?limit=1000", nil).must(nc.t, 200).decode(nc.t, &l)
	var out []string
	for _, e := range l.Items {
		out = append(out, e.Type)
	}
	return out
}

// invariant is the never-two-copies checker of a virtual IP and its
// service (nslab.Invariant): who holds the address follows every node's
// address events (netlink), so an overlap of a millisecond counts; who
// listens on the port is sampled about every millisecond per node.
type invariant struct {
	lab     *nslab.Invariant
	checked atomic.Bool
}

// watchInvariant starts the never-two-copies checker for addr and
// tcpecho's port 7000.
func (nc *nsCluster) watchInvariant(addr string) *invariant {
	return nc.watchInvariantPort(addr, 7000)
}

// watchInvariantPort starts the never-two-copies checker for addr and a
// service listening on addr:port.
func (nc *nsCluster) watchInvariantPort(addr string, port int) *invariant {
	nc.t.Helper()
	lab, err := nslab.WatchInvariant(nc.top.lab, addr, port, time.Millisecond)
	if err != nil {
		nc.t.Fatal(err)
	}
	inv := &invariant{lab: lab}
	nc.t.Cleanup(func() { inv.check(nc.t) })
	return inv
}

// exclude stops counting node i: it crashed, and what its namespace still
// holds would be gone with a real machine (see crash).
func (inv *invariant) exclude(i int) { inv.lab.Exclude(i) }

// include counts node i again (it rebooted: see reboot).
func (inv *invariant) include(i int) { inv.lab.Include(i) }

// check stops the checker (once) and fails t if two copies ever ran.
func (inv *invariant) check(t *testing.T) {
	t.Helper()
	if !inv.checked.CompareAndSwap(false, true) {
		return
	}
	inv.lab.Stop()
	r := inv.lab.Report("")
	events, period := inv.lab.Stats()
	if errs := inv.lab.Errors(); len(errs) > 0 {
		t.Errorf("the never-two-copies checker lost track (it may have missed an overlap): %v", errs)
	}
	if r.Violated() {
		t.Errorf("never-two-copies violated: %v; first %s", r, r.First)
	} else {
		t.Logf("invariant held: %v (%d address events; listener reads every %v per node)", r, events, period)
	}
}

// portOf returns the numeric port of a host:port string.
func portOf(hostport string) int {
	_, p, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(p)
	return n
}

// crash simulates a machine dying: every process of node i (agent and
// services) is SIGKILLed and its links go down. The invariant checker stops
// counting it: a real machine's addresses vanish with it, a namespace's
// stay configured (unreachable) until reboot flushes them.
func (nc *nsCluster) crash(i int, inv *invariant) {
	if inv != nil {
		inv.exclude(i)
	}
	nc.agents[i].kill()
	killNamespace(nc.top.nodes[i].ns)
	nc.top.setLink(i, false)
}

// reboot brings a crashed node back empty: addresses flushed (but eth0's),
// mounts of the old agent gone with its mount namespace, links up, the
// agent started again with its data directory.
func (nc *nsCluster) reboot(i int, inv *invariant) {
	nd := nc.top.nodes[i]
	for _, dev := range []string{"eth0", "eth1"} {
		ipCmd(nc.t, "-n", nd.ns, "addr", "flush", "dev", dev)
	}
	ipCmd(nc.t, "-n", nd.ns, "addr", "add", nd.addr+"/24", "dev", "eth0")
	nc.top.setLink(i, true)
	if inv != nil {
		inv.include(i)
	}
	nc.agents[i].start(nc.servers(), "")
}

// dialFrom connects to addr:7000 from node i's namespace and returns the
// greeting ("" when nothing answers).
func (nc *nsCluster) dialFrom(i int, addr string) string {
	out, err := exec.Command("ip", "netns", "exec", nc.top.nodes[i].ns, env.tcpecho, "-dial", net.JoinHostPort(addr, "7000")).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
