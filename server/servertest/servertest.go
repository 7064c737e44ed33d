// Package servertest runs a whole Backstop cluster in one test process,
// without root: backstopd's HTTP API, leader election and failover engine
// on a real PostgreSQL database (from store/storetest), and N real
// backstop-agents (package nodeagent) on fake resource kits, enrolled
// through the API, exchanging path heartbeats over loopback addresses
// 127.a.b.1, 127.a.b.2, ... (Linux routes all of 127/8 to lo).
//
// Tests drive it with fault injectors that need no privileges (StopAgent,
// PartitionAgentFromControlPlane, CrashNode, FailChecks) and judge it with
// named assertions (ExactlyOneCopy, EveryAgentSeesEveryPeer, WaitPlaced,
// WaitNodeState, HasEvents). The never-two-copies oracle is always on: the
// fake kits share one world, and every start that makes a hierarchy run on
// two nodes at once is recorded as an Overlap and fails the test.
//
// What needs the kernel (addresses, mounts, processes, fence guards,
// watchdogs, cut veths) stays in the namespace suite of e2e/.
//
// A test binary using it stops the shared PostgreSQL server in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }
package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/nodeagent"
	"github.com/backstop-ha/backstop/server"
	"github.com/backstop-ha/backstop/server/failover"
	"github.com/backstop-ha/backstop/server/leader"
	"github.com/backstop-ha/backstop/server/notify"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

// AdminToken is the admin API token of every harness.
const AdminToken = "bsk_servertest-admin-0123456789abcdef"

// Options shape a harness.
type Options struct {
	// Nodes is the number of nodes, each with its agent (default 3).
	Nodes int
	// Profile is the cluster's timing profile (default "fast"). The fast
	// profile declares a path dead after 150 ms: a machine loaded enough
	// (-race and a CPU hog) misses that, and its nodes then rightly fence
	// themselves; scenarios that must not see that use "lan".
	Profile string
	// RestartHold is the agents' restart hold (default 0: an agent that
	// stops is, after its lease, a node that failed).
	RestartHold time.Duration
	// Wait bounds each wait of the harness (default 60 s). It is a guard
	// against hanging, never a claim about speed.
	Wait time.Duration
}

// Harness is one cluster: a control plane and its nodes.
type Harness struct {
	t    testing.TB
	opts Options

	// URL is the control plane's base URL; ClusterID the cluster's id.
	URL       string
	ClusterID string
	// Nodes are the cluster's nodes, in creation order (node1 first).
	Nodes []*Node

	world  *world
	port   int
	client *http.Client
	cpLogs *logRing

	mu          sync.Mutex
	hierarchies map[string]*hierarchy // by name
}

type hierarchy struct {
	id        string
	resources []string
}

// Node is one node of the harness and its in-process agent.
type Node struct {
	Index int
	Name  string
	ID    string
	// Addr is the node's loopback address, the local end of its paths.
	Addr netip.Addr
	// Kit is the node's fake resource kits.
	Kit *Kit

	h     *Harness
	token string
	dir   string
	logs  *logRing

	// The fields below belong to the test goroutine.
	doer    *doer
	cancel  context.CancelFunc
	done    chan struct{}
	runErr  error
	running bool
}

// New starts a control plane on a fresh database, creates a cluster of
// opts.Nodes nodes with a path between every two of them, starts their
// agents and waits until every node is up and every agent sees every
// peer. Everything stops when t ends; the logs are shown if t failed.
func New(t testing.TB, opts Options) *Harness {
	t.Helper()
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.Profile == "" {
		opts.Profile = "fast"
	}
	if opts.Wait <= 0 {
		opts.Wait = 60 * time.Second
	}
	h := &Harness{t: t, opts: opts, world: newWorld(), client: &http.Client{Transport: &http.Transport{}},
		cpLogs: newLogRing(400), hierarchies: map[string]*hierarchy{}}
	t.Cleanup(h.client.CloseIdleConnections)
	base, port := loopbackAddrs(t, opts.Nodes)
	h.port = port
	h.startControlPlane()

	var cl struct {
		ID string `json:"id"`
	}
	h.decode(h.Must("POST", "/v1/clusters", map[string]any{"name": "servertest", "timing_profile": opts.Profile}, 201), &cl)
	h.ClusterID = cl.ID
	for i := range opts.Nodes {
		var nd struct {
			ID    string `json:"id"`
			Token string `json:"enrollment_token"`
		}
		name := fmt.Sprintf("node%d", i+1)
		h.decode(h.Must("POST", h.cpath("/nodes"), map[string]any{"name": name}, 201), &nd)
		addr := base
		for range i {
			addr = addr.Next()
		}
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		h.Nodes = append(h.Nodes, &Node{Index: i, Name: name, ID: nd.ID, Addr: addr, Kit: newKit(h.world, i),
			h: h, token: nd.Token, dir: dir, logs: newLogRing(400)})
	}
	for i := range h.Nodes {
		for j := i + 1; j < len(h.Nodes); j++ {
			h.Must("POST", h.cpath("/paths"), map[string]any{
				"a": map[string]any{"node_id": h.Nodes[i].ID, "address": h.Nodes[i].Addr.String()},
				"b": map[string]any{"node_id": h.Nodes[j].ID, "address": h.Nodes[j].Addr.String()},
			}, 201)
		}
	}
	// Registered before the agents start, so that it runs after they
	// stopped (cleanups run last in, first out).
	t.Cleanup(h.report)
	for _, n := range h.Nodes {
		h.startAgent(n)
	}
	t.Cleanup(func() {
		for _, n := range h.Nodes {
			if n.running {
				n.stop()
			}
		}
	})
	for i := range h.Nodes {
		h.WaitNodeState(i, "up")
	}
	h.EveryAgentSeesEveryPeer()
	return h
}

// loopbackAddrs returns the first of n consecutive addresses of a random
// 127.a.b.0/24 (so that concurrent harnesses do not meet) and a UDP port
// free on all of them.
func loopbackAddrs(t testing.TB, n int) (netip.Addr, int) {
	t.Helper()
	var last error
	for range 50 {
		base := netip.AddrFrom4([4]byte{127, byte(100 + rand.IntN(150)), byte(1 + rand.IntN(250)), 1})
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(base, 0)))
		if err != nil {
			last = err
			continue
		}
		port := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		conns := []*net.UDPConn{c}
		a := base
		for range n - 1 {
			a = a.Next()
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port)))
			if err != nil {
				last = err
				break
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		if len(conns) == n {
			return base, int(port)
		}
	}
	t.Skipf("servertest: no usable loopback addresses 127.x.y.1..%d: %v", n, last)
	return netip.Addr{}, 0
}

// startControlPlane runs backstopd in-process as cmd/backstopd wires it,
// less event delivery: the API on a loopback listener, the agent long-poll
// wakers, the event notifier, and the leader elector running the engine.
func (h *Harness) startControlPlane() {
	t := h.t
	t.Helper()
	dbURL := storetest.URL(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.EnsureBootstrapToken(ctx, AdminToken); err != nil {
		t.Fatal(err)
	}
	keys, err := signing.Open(ctx, st, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	latest, err := store.LatestMigration()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(h.cpLogs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Webhook and SNMP target secrets are sealed, and pings and test
	// traps sent, by a deliverer; this one sends only those one-shots
	// (no queue: the harness has no River workers).
	if _, err := st.StartSNMPEngine(ctx); err != nil {
		t.Fatal(err)
	}
	sealer, err := notify.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	deliverer, err := notify.New(notify.Config{Store: st, Sealer: sealer, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var poke atomic.Pointer[failover.Engine]
	srv, err := server.New(server.Config{Store: st, Keyring: keys, Logger: log, SchemaVersion: latest, Deliverer: deliverer,
		OnChange: func(clusterID string) {
			if e := poke.Load(); e != nil {
				e.PokeCluster(clusterID)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	h.URL = ts.URL
	engine := &failover.Engine{Store: st, Sign: keys.Sign, Log: log.With("component", "engine"), OnFence: srv.ObserveFence}
	poke.Store(engine)
	elector := leader.New(leader.Config{
		Store:     leader.FromStore[*store.LeaderSession](st),
		ReplicaID: "servertest",
		Address:   ts.Listener.Addr().String(),
		Logger:    log,
		Interval:  100 * time.Millisecond,
		Lead:      engine.Run,
	})
	bgCtx, stop := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { srv.Run(bgCtx) })
	bg.Go(func() { srv.RunEvents(bgCtx) })
	bg.Go(func() { elector.Run(bgCtx) })
	t.Cleanup(func() {
		ts.CloseClientConnections()
		stop()
		bg.Wait()
		srv.CloseStreams()
		ts.Close()
	})
	testkit.Eventually(t, h.opts.Wait, "the control plane leading", func() bool { return elector.Term() > 0 })
}

// report shows the logs when the test failed, and fails it when two
// copies of a hierarchy ever ran.
func (h *Harness) report() {
	for _, o := range h.world.overlapList() {
		h.t.Errorf("never two copies violated: %s", o)
	}
	if !h.t.Failed() {
		return
	}
	h.t.Logf("control plane log (last lines):\n%s", h.cpLogs)
	for _, n := range h.Nodes {
		h.t.Logf("%s agent log (last lines):\n%s", n.Name, n.logs)
	}
}

// startAgent runs n's agent until stop.
func (h *Harness) startAgent(n *Node) {
	t := h.t
	t.Helper()
	cfg := nodeagent.DefaultConfig()
	cfg.Servers = []string{h.URL}
	cfg.DataDir = n.dir
	cfg.EnrollToken = n.token
	cfg.PathPort = h.port
	cfg.MetricsListen = ""
	cfg.Version = "servertest"
	cfg.StepTimeout = 10 * time.Second
	cfg.ShutdownGrace = 2 * time.Second
	cfg.RestartHold = h.opts.RestartHold
	cfg.Logger = slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.Name)
	n.doer = newDoer()
	a, err := nodeagent.NewWithHooks(cfg, nodeagent.Hooks{NewInstance: n.Kit.newInstance, HTTPDoer: n.doer, PollWait: 2 * time.Second})
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done, n.running, n.runErr = cancel, make(chan struct{}), true, nil
	done := n.done
	go func() {
		defer close(done)
		n.runErr = a.Run(ctx)
	}()
}

// stop cancels n's agent and waits for it to end.
func (n *Node) stop() {
	n.cancel()
	n.running = false
	select {
	case <-n.done:
		if n.runErr != nil {
			n.h.t.Errorf("%s: the agent's Run: %v", n.Name, n.runErr)
		}
	case <-time.After(n.h.opts.Wait):
		n.h.t.Errorf("%s: the agent did not stop within %v", n.Name, n.h.opts.Wait)
	}
	n.doer.close()
}

// StopAgent stops node i's agent cleanly (SIGTERM): it ends its loops
// and leaves its resources running, as backstop-agent does.
func (h *Harness) StopAgent(i int) {
	h.t.Helper()
	n := h.node(i)
	if !n.running {
		h.t.Fatalf("%s: the agent is not running", n.Name)
	}
	n.stop()
}

// StartAgent starts node i's agent again, from its data directory: after
// StopAgent, an agent restart; after CrashNode, a reboot (nothing runs
// on the node, and its kits start resources again).
func (h *Harness) StartAgent(i int) {
	h.t.Helper()
	n := h.node(i)
	if n.running {
		h.t.Fatalf("%s: the agent is already running", n.Name)
	}
	n.Kit.reboot()
	h.startAgent(n)
}

// CrashNode crashes node i: at one instant everything on it stops (its
// resources, as if the machine lost power, and its agent, with its path
// heartbeats), and the agent gets no word out to the control plane.
func (h *Harness) CrashNode(i int) {
	h.t.Helper()
	n := h.node(i)
	if !n.running {
		h.t.Fatalf("%s: the agent is not running", n.Name)
	}
	n.doer.partition(true)
	n.Kit.crash()
	n.stop()
}

// PartitionAgentFromControlPlane cuts node i's agent from the control
// plane: its requests fail, those in flight too. Its paths to its peers
// stay up.
func (h *Harness) PartitionAgentFromControlPlane(i int) {
	h.node(i).doer.partition(true)
}

// HealPartition undoes PartitionAgentFromControlPlane.
func (h *Harness) HealPartition(i int) {
	h.node(i).doer.partition(false)
}

func (h *Harness) node(i int) *Node {
	h.t.Helper()
	if i < 0 || i >= len(h.Nodes) {
		h.t.Fatalf("no node %d (the harness has %d)", i, len(h.Nodes))
	}
	return h.Nodes[i]
}

// nodeIndex returns the index of the node with id, or -1.
func (h *Harness) nodeIndex(id string) int {
	for _, n := range h.Nodes {
		if n.ID == id {
			return n.Index
		}
	}
	return -1
}

// EveryAgentSeesEveryPeer waits until every running agent has reported,
// in a heartbeat sent after this call, every other running node up over
// at least one path. A partitioned agent's heartbeats count too: they
// say what it sees, though the control plane does not get them.
func (h *Harness) EveryAgentSeesEveryPeer() {
	h.t.Helper()
	start := map[int]int{}
	for _, n := range h.Nodes {
		if n.running {
			start[n.Index] = n.doer.heartbeats()
		}
	}
	testkit.Eventually(h.t, h.opts.Wait, "every agent seeing every peer", func() bool {
		for _, n := range h.Nodes {
			if !n.running {
				continue
			}
			if n.doer.heartbeats() <= start[n.Index] {
				return false
			}
			seen := n.doer.sees()
			for _, p := range h.Nodes {
				if p != n && p.running && seen[p.ID] != "up" {
					return false
				}
			}
		}
		return true
	})
}

// WaitPeersSee waits until every other running agent reports node i in
// state ("up" or "down") in its heartbeats.
func (h *Harness) WaitPeersSee(i int, state string) {
	h.t.Helper()
	n := h.node(i)
	testkit.Eventually(h.t, h.opts.Wait, fmt.Sprintf("every peer seeing %s %s", n.Name, state), func() bool {
		for _, p := range h.Nodes {
			if p != n && p.running && p.doer.sees()[n.ID] != state {
				return false
			}
		}
		return true
	})
}

// Sees returns what node i's agent said of each peer (by index) in its
// last heartbeat: "up", "down", or "" when it did not report it.
func (h *Harness) Sees(i int) map[int]string {
	out := map[int]string{}
	for id, s := range h.node(i).doer.sees() {
		out[h.nodeIndex(id)] = s
	}
	return out
}

// HierarchySpec describes a hierarchy to create.
type HierarchySpec struct {
	Name string
	// Resources are the resources as the API takes them; nil: an ip
	// "vip" and a service "svc" on it, whose quick check runs every
	// 200 ms and whose local recovery allows 2 restarts.
	Resources []map[string]any
	// Priorities are node indexes, priority 1 first; nil: every node in
	// order.
	Priorities []int
	// Extra are more fields of the request (exclusivity_group, ...).
	Extra map[string]any
}

// CreateHierarchy creates a hierarchy and returns its id.
func (h *Harness) CreateHierarchy(spec HierarchySpec) string {
	h.t.Helper()
	h.mu.Lock()
	k := len(h.hierarchies)
	h.mu.Unlock()
	res := spec.Resources
	if res == nil {
		res = []map[string]any{
			{"name": "vip", "kind": "ip", "params": map[string]any{"address": fmt.Sprintf("198.18.0.%d/24", 10+k), "interface": "eth0"}},
			{"name": "svc", "kind": "service", "params": map[string]any{"start": "servertest " + spec.Name}, "depends_on": []string{"vip"},
				"quick_check":    map[string]any{"interval_ms": 200, "timeout_ms": 150},
				"local_recovery": map[string]any{"max_restarts": 2, "window_s": 300}},
		}
	}
	prios := spec.Priorities
	if prios == nil {
		for i := range h.Nodes {
			prios = append(prios, i)
		}
	}
	var ps []map[string]any
	for p, i := range prios {
		ps = append(ps, map[string]any{"node_id": h.node(i).ID, "priority": p + 1})
	}
	body := map[string]any{"name": spec.Name, "resources": res, "priorities": ps}
	for k, v := range spec.Extra {
		body[k] = v
	}
	var x struct {
		ID string `json:"id"`
	}
	h.decode(h.Must("POST", h.cpath("/hierarchies"), body, 201), &x)
	var names []string
	for _, r := range res {
		names = append(names, fmt.Sprint(r["name"]))
	}
	h.mu.Lock()
	h.hierarchies[spec.Name] = &hierarchy{id: x.ID, resources: names}
	h.mu.Unlock()
	h.world.mu.Lock()
	h.world.names[x.ID] = spec.Name
	h.world.mu.Unlock()
	return x.ID
}

// HierarchyID returns the id of the hierarchy named name.
func (h *Harness) HierarchyID(name string) string {
	h.t.Helper()
	return h.hier(name).id
}

func (h *Harness) hier(name string) *hierarchy {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	x, ok := h.hierarchies[name]
	if !ok {
		h.t.Fatalf("no hierarchy %q (create it with CreateHierarchy)", name)
	}
	return x
}

// BringInService asks the control plane to bring hierarchy name in
// service on node i (POST in-service); WaitPlaced waits for it.
func (h *Harness) BringInService(name string, i int) {
	h.t.Helper()
	h.Must("POST", h.cpath("/hierarchies/"+h.hier(name).id+"/in-service"), map[string]any{"node_id": h.node(i).ID}, 202)
}

// Placement is where the control plane has a hierarchy.
type Placement struct {
	Node   int // node index; -1 when not placed
	NodeID string
	State  string
	Epoch  int64
	Detail string
}

// Placement returns hierarchy name's placement as the API shows it.
func (h *Harness) Placement(name string) Placement {
	h.t.Helper()
	var x struct {
		Placement struct {
			NodeID string `json:"node_id"`
			State  string `json:"state"`
			Epoch  int64  `json:"epoch"`
			Detail string `json:"detail"`
		} `json:"placement"`
	}
	h.decode(h.Must("GET", h.cpath("/hierarchies/"+h.hier(name).id), nil, 200), &x)
	p := x.Placement
	return Placement{Node: h.nodeIndex(p.NodeID), NodeID: p.NodeID, State: p.State, Epoch: p.Epoch, Detail: p.Detail}
}

// WaitPlaced waits until hierarchy name is in service on node i, both as
// the control plane says and on the node's kits (every resource runs).
func (h *Harness) WaitPlaced(name string, i int) {
	h.t.Helper()
	x := h.hier(name)
	n := h.node(i)
	var last Placement
	var running []string
	testkit.Eventually(h.t, h.opts.Wait, fmt.Sprintf("%s in service on %s", name, n.Name), func() bool {
		last = h.Placement(name)
		running = n.Kit.Running(x.id)
		return last.Node == i && last.State == "in_service" && len(running) == len(x.resources)
	})
}

// Running returns the nodes on which at least one resource of hierarchy
// name runs now.
func (h *Harness) Running(name string) []int {
	return h.world.nodes(h.hier(name).id)
}

// Overlaps returns every instant two nodes ran hierarchy name's
// resources at once (all hierarchies for ""): what the never-two-copies
// oracle recorded.
func (h *Harness) Overlaps(name string) []Overlap {
	var out []Overlap
	for _, o := range h.world.overlapList() {
		if name == "" || o.Hierarchy == name {
			out = append(out, o)
		}
	}
	return out
}

// ExactlyOneCopy asserts that hierarchy name never ran on two nodes at
// once since the harness started, and that it runs now, completely, on
// exactly one node, whose index it returns.
func (h *Harness) ExactlyOneCopy(name string) int {
	h.t.Helper()
	x := h.hier(name)
	if o := h.Overlaps(name); len(o) > 0 {
		h.t.Fatalf("%s ran twice: %v", name, o)
	}
	nodes := h.world.nodes(x.id)
	if len(nodes) != 1 {
		h.t.Fatalf("%s runs on nodes %v, want exactly one", name, nodes)
	}
	if got := h.Nodes[nodes[0]].Kit.Running(x.id); len(got) != len(x.resources) {
		h.t.Fatalf("%s runs partly on node%d: %v of %v", name, nodes[0]+1, got, x.resources)
	}
	return nodes[0]
}

// NodeState returns node i's state as the control plane says.
func (h *Harness) NodeState(i int) string {
	h.t.Helper()
	var n struct {
		State string `json:"state"`
	}
	h.decode(h.Must("GET", h.cpath("/nodes/"+h.node(i).ID), nil, 200), &n)
	return n.State
}

// WaitNodeState waits until node i is in state.
func (h *Harness) WaitNodeState(i int, state string) {
	h.t.Helper()
	testkit.Eventually(h.t, h.opts.Wait, fmt.Sprintf("node%d %s", i+1, state), func() bool { return h.NodeState(i) == state })
}

// Events returns the types of the cluster's events, oldest first.
func (h *Harness) Events() []string {
	h.t.Helper()
	var types []string
	cursor := ""
	for {
		q := "/events?limit=200"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		var page struct {
			Items []struct {
				Type string `json:"type"`
			} `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		h.decode(h.Must("GET", h.cpath(q), nil, 200), &page)
		for _, e := range page.Items {
			types = append(types, e.Type)
		}
		if page.NextCursor == "" {
			return types
		}
		cursor = page.NextCursor
	}
}

// HasEvents fails the test unless every type is in the event log, in
// this order (other events may come between).
func (h *Harness) HasEvents(types ...string) {
	h.t.Helper()
	evs := h.Events()
	i := 0
	for _, e := range evs {
		if i < len(types) && e == types[i] {
			i++
		}
	}
	if i < len(types) {
		h.t.Errorf("events %v lack %v in this order", evs, types)
	}
}

// WaitEvent waits until an event of type typ is in the log.
func (h *Harness) WaitEvent(typ string) {
	h.t.Helper()
	testkit.Eventually(h.t, h.opts.Wait, "a "+typ+" event", func() bool { return slices.Contains(h.Events(), typ) })
}

// FailChecks makes every check of resource res of hierarchy name on node
// i fail, until HealChecks.
func (h *Harness) FailChecks(i int, name, res string) {
	h.node(i).Kit.FailChecks(h.hier(name).id, res, nil)
}

// HealChecks undoes FailChecks.
func (h *Harness) HealChecks(i int, name, res string) {
	h.node(i).Kit.HealChecks(h.hier(name).id, res)
}

func (h *Harness) cpath(p string) string { return "/v1/clusters/" + h.ClusterID + p }

// Do sends an admin API request (body as JSON unless nil) and returns the
// status and body. It fails the test only when the server cannot be
// reached.
func (h *Harness) Do(method, path string, body any) (int, []byte) {
	h.t.Helper()
	resp, b := testkit.Request(h.t, h.client, method, h.URL+path, AdminToken, body)
	return resp.StatusCode, b
}

// Must is Do that fails the test unless the status is want.
func (h *Harness) Must(method, path string, body any, want int) []byte {
	h.t.Helper()
	status, b := h.Do(method, path, body)
	if status != want {
		h.t.Fatalf("%s %s: %d %s, want %d", method, path, status, strings.TrimSpace(string(b)), want)
	}
	return b
}

func (h *Harness) decode(b []byte, v any) {
	h.t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		h.t.Fatalf("decode %s: %v", b, err)
	}
}
