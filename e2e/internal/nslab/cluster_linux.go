package nslab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/pki"
)

// Binaries are the programs a cluster runs.
type Binaries struct {
	Backstopd string
	Agent     string
	TCPEcho   string // the protected test service (e2e/internal/tcpecho)
}

// ClusterOptions configures NewCluster.
type ClusterOptions struct {
	Bins        Binaries
	DatabaseURL string
	Profile     string // timing profile: fast, lan, wan
	Nodes       int
	Dir         string   // logs and agent data directories (must exist)
	Prefix      string   // namespace name prefix, e.g. "fb"
	AdminToken  string   // backstopd's BACKSTOP_BOOTSTRAP_TOKEN
	SealKey     string   // backstopd's BACKSTOP_SECRET_KEY
	Name        string   // the cluster's name (default bench-PROFILE-ID)
	NodeNames   []string // the nodes' names (default node1, node2, ...)
	// PlainHTTP runs backstopd with --insecure-http; by default it
	// serves HTTPS with a certificate of a throwaway CA (in Dir/tls) the
	// agents pin through their enrollment tokens, and the agents present
	// client certificates.
	PlainHTTP bool
}

// Cluster is a running test cluster: the network, one backstopd on the
// host's address, a cluster with a node per namespace, communication
// paths between every pair and an enrolled agent per node.
type Cluster struct {
	Top     *Topology
	Daemon  *Daemon
	API     *Client
	ID      string
	NodeIDs []string
	Agents  []*Agent
	opts    ClusterOptions
}

// NewCluster builds a cluster. On error everything built is removed.
func NewCluster(ctx context.Context, o ClusterOptions) (c *Cluster, err error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	c = &Cluster{opts: o}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.Top, err = NewTopology(o.Prefix, o.Nodes); err != nil {
		return c, err
	}
	var certs *pki.Files
	if !o.PlainHTTP {
		ca, err := pki.NewCA("nslab CA", 24*time.Hour)
		if err != nil {
			return c, err
		}
		f, err := ca.WriteFiles(filepath.Join(o.Dir, "tls"), []string{c.Top.HostAddr()}, 24*time.Hour)
		if err != nil {
			return c, err
		}
		certs = &f
	}
	if c.Daemon, err = StartBackstopd(ctx, o.Bins.Backstopd, c.Top.HostAddr(), o.DatabaseURL, o.AdminToken, o.SealKey,
		filepath.Join(o.Dir, "backstopd.log"), certs); err != nil {
		return c, err
	}
	c.API = &Client{Base: c.Daemon.URL(), Token: o.AdminToken, HTTP: c.Daemon.HTTPClient(10 * time.Second)}
	var cl struct {
		ID string `json:"id"`
	}
	name := o.Name
	if name == "" {
		name = "bench-" + o.Profile + "-" + c.Top.ID
	}
	if _, err = c.API.Do(ctx, "POST", "/v1/clusters", map[string]any{"name": name, "timing_profile": o.Profile}, 201, &cl); err != nil {
		return c, err
	}
	c.ID = cl.ID
	var tokens []string
	for i := range o.Nodes {
		var nd struct {
			ID    string `json:"id"`
			Token string `json:"enrollment_token"`
		}
		if _, err = c.API.Do(ctx, "POST", c.path("/nodes"), map[string]any{"name": c.NodeName(i)}, 201, &nd); err != nil {
			return c, err
		}
		c.NodeIDs, tokens = append(c.NodeIDs, nd.ID), append(tokens, nd.Token)
	}
	for i := range o.Nodes {
		for j := i + 1; j < o.Nodes; j++ {
			if _, err = c.API.Do(ctx, "POST", c.path("/paths"), map[string]any{
				"a": map[string]any{"node_id": c.NodeIDs[i], "address": c.Top.Nodes[i].Addr},
				"b": map[string]any{"node_id": c.NodeIDs[j], "address": c.Top.Nodes[j].Addr},
			}, 201, nil); err != nil {
				return c, err
			}
		}
	}
	for i := range o.Nodes {
		a, err := NewAgent(o.Bins.Agent, c.NodeName(i), c.Top.Nodes[i], o.Dir)
		if err != nil {
			return c, err
		}
		c.Agents = append(c.Agents, a)
		if err := a.Start(c.Daemon.URL(), tokens[i]); err != nil {
			return c, err
		}
	}
	for i := range o.Nodes {
		if err = c.WaitNodeState(ctx, i, "up", time.Minute); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Close kills the agents and every process of the node namespaces,
// removes the network and stops backstopd. Safe to call more than once.
func (c *Cluster) Close() {
	for _, a := range c.Agents {
		a.Kill()
	}
	if c.Top != nil {
		c.Top.Destroy()
	}
	if c.Daemon != nil {
		c.Daemon.Stop(10 * time.Second)
	}
}

func (c *Cluster) path(p string) string { return "/v1/clusters/" + c.ID + p }

// NodeName is node i's name.
func (c *Cluster) NodeName(i int) string {
	if i < len(c.opts.NodeNames) {
		return c.opts.NodeNames[i]
	}
	return fmt.Sprintf("node%d", i+1)
}

// CreateHierarchy creates a hierarchy of resources with prios (node
// indexes, priority 1 first) and returns its id.
func (c *Cluster) CreateHierarchy(ctx context.Context, name string, resources []map[string]any, prios []int) (string, error) {
	var ps []map[string]any
	for i, n := range prios {
		ps = append(ps, map[string]any{"node_id": c.NodeIDs[n], "priority": i + 1})
	}
	var h struct {
		ID string `json:"id"`
	}
	_, err := c.API.Do(ctx, "POST", c.path("/hierarchies"), map[string]any{"name": name, "resources": resources, "priorities": ps}, 201, &h)
	return h.ID, err
}

// NodeState returns node i's state (up, down, unreachable, maintenance).
func (c *Cluster) NodeState(ctx context.Context, i int) (string, error) {
	var n struct {
		State string `json:"state"`
	}
	_, err := c.API.Do(ctx, "GET", c.path("/nodes/"+c.NodeIDs[i]), nil, 200, &n)
	return n.State, err
}

// WaitNodeState polls until node i is in state.
func (c *Cluster) WaitNodeState(ctx context.Context, i int, state string, d time.Duration) error {
	return testkit.Poll(ctx, d, fmt.Sprintf("node%d %s", i+1, state), func() (bool, error) {
		s, err := c.NodeState(ctx, i)
		return s == state, err
	})
}

// CreateTCPEchoHierarchy creates the e2e tests' hierarchy: a virtual IP
// on eth0 (eth1 as backup) ← a directory bind-mounted at a target under
// the cluster's directory ← tcpecho listening on VIP:7000, greeting with
// its namespace's name. prios lists node indexes, priority 1 first.
func (c *Cluster) CreateTCPEchoHierarchy(ctx context.Context, name string, vip int, prios []int) (string, error) {
	addr := c.Top.VIP(vip)
	src := filepath.Join(c.opts.Dir, name+"-volume")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	var ps []map[string]any
	for i, n := range prios {
		ps = append(ps, map[string]any{"node_id": c.NodeIDs[n], "priority": i + 1})
	}
	spec := map[string]any{
		"name": name,
		"resources": []map[string]any{
			{"name": "vip", "kind": "ip", "params": map[string]any{"address": addr + "/24", "interface": "eth0", "backup_interfaces": []string{"eth1"}}},
			{"name": "data", "kind": "volume", "params": map[string]any{"source": src, "target": filepath.Join(c.opts.Dir, name+"-mnt")}, "depends_on": []string{"vip"}},
			{"name": "svc", "kind": "service", "params": map[string]any{
				"start":           fmt.Sprintf(`exec %s --listen %s:7000 --name "$(ip netns identify $$)"`, c.opts.Bins.TCPEcho, addr),
				"stop_timeout_ms": 2000,
			}, "depends_on": []string{"data"},
				"quick_check":    map[string]any{"interval_ms": 200, "timeout_ms": 150},
				"local_recovery": map[string]any{"max_restarts": 2, "window_s": 300}},
		},
		"priorities": ps,
	}
	var h struct {
		ID string `json:"id"`
	}
	_, err := c.API.Do(ctx, "POST", c.path("/hierarchies"), spec, 201, &h)
	return h.ID, err
}

// Placement is where a hierarchy is.
type Placement struct {
	NodeID string `json:"node_id"`
	State  string `json:"state"`
	Epoch  int64  `json:"epoch"`
	Detail string `json:"detail"`
}

// Placement returns hierarchy h's placement.
func (c *Cluster) Placement(ctx context.Context, h string) (Placement, error) {
	var x struct {
		Placement Placement `json:"placement"`
	}
	_, err := c.API.Do(ctx, "GET", c.path("/hierarchies/"+h), nil, 200, &x)
	return x.Placement, err
}

// WaitPlaced polls until h is in service on node i.
func (c *Cluster) WaitPlaced(ctx context.Context, h string, i int, d time.Duration) error {
	return testkit.Poll(ctx, d, fmt.Sprintf("hierarchy in service on node%d", i+1), func() (bool, error) {
		p, err := c.Placement(ctx, h)
		return p.State == "in_service" && p.NodeID == c.NodeIDs[i], err
	})
}

// InService brings h in service on node i and waits for the operation.
func (c *Cluster) InService(ctx context.Context, h string, i int) error {
	return c.action(ctx, "/hierarchies/"+h+"/in-service", i)
}

// Switchover moves h to node i and waits for the operation.
func (c *Cluster) Switchover(ctx context.Context, h string, i int) error {
	return c.action(ctx, "/hierarchies/"+h+"/switchover", i)
}

func (c *Cluster) action(ctx context.Context, p string, i int) error {
	r, err := c.API.Do(ctx, "POST", c.path(p), map[string]any{"node_id": c.NodeIDs[i]}, 202, nil)
	if err != nil {
		return err
	}
	var op map[string]any
	err = testkit.Poll(ctx, time.Minute, "operation "+r.Location, func() (bool, error) {
		op = nil
		_, err := c.API.Do(ctx, "GET", r.Location, nil, 200, &op)
		return op["state"] == "succeeded" || op["state"] == "failed", err
	})
	if err != nil {
		return err
	}
	if op["state"] != "succeeded" {
		return fmt.Errorf("%s to node%d: %v", p, i+1, op)
	}
	return nil
}

// Crash simulates node i dying: its agent and every process of its
// namespace SIGKILLed, its links down. Its addresses stay configured
// (unreachable) until Reboot flushes them.
func (c *Cluster) Crash(i int) error {
	c.Agents[i].Kill()
	KillNamespace(c.Top.Nodes[i].NS)
	return c.Top.SetLink(i, false)
}

// Reboot brings a crashed node back empty: addresses flushed (but
// eth0's), links up, its agent started again with its data directory
// (mounts of the old agent went with its mount namespace).
func (c *Cluster) Reboot(i int) error {
	if err := c.Top.ResetAddrs(i); err != nil {
		return err
	}
	if err := c.Top.SetLink(i, true); err != nil {
		return err
	}
	return c.Agents[i].Start(c.Daemon.URL(), "")
}

// Incident is a failover, switchover or switchback with its timeline.
type Incident struct {
	ID               string     `json:"id"`
	Kind             string     `json:"kind"`
	State            string     `json:"state"`
	FromNodeID       string     `json:"from_node_id"`
	ToNodeID         string     `json:"to_node_id"`
	DetectedAt       time.Time  `json:"detected_at"`
	DecidedAt        *time.Time `json:"decided_at"`
	StoppedAt        *time.Time `json:"stopped_at"`
	StartedAt        *time.Time `json:"started_at"`
	FirstDeepCheckAt *time.Time `json:"first_deep_check_at"`
	RecoveryMS       *int64     `json:"recovery_ms"`
}

// Incidents returns the cluster's incidents, oldest first.
func (c *Cluster) Incidents(ctx context.Context) ([]Incident, error) {
	var all []Incident
	cursor := ""
	for {
		var page struct {
			Items      []Incident `json:"items"`
			NextCursor string     `json:"next_cursor"`
		}
		p := c.path("/incidents?limit=500")
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		if _, err := c.API.Do(ctx, "GET", p, nil, 200, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
}

// Greeting connects to addr (host:port) and returns tcpecho's first line
// without its newline, or "" when nothing answers.
func Greeting(addr string, timeout time.Duration) string {
	conn, err := dial(addr, timeout)
	if err != nil {
		return ""
	}
	defer conn.Close()
	return strings.TrimSpace(readLine(conn, timeout))
}

// Event is an entry of the cluster's event log.
type Event struct {
	Seq     int64          `json:"seq"`
	Type    string         `json:"type"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
	At      time.Time      `json:"at"`
}

// EventsAfter returns the events with a sequence number above after.
func (c *Cluster) EventsAfter(ctx context.Context, after int64) ([]Event, error) {
	var all []Event
	for {
		var page struct {
			Items []Event `json:"items"`
		}
		if _, err := c.API.Do(ctx, "GET", c.path(fmt.Sprintf("/events?after=%d&limit=500", after)), nil, 200, &page); err != nil {
			return all, err
		}
		all = append(all, page.Items...)
		if len(page.Items) < 500 {
			return all, nil
		}
		after = page.Items[len(page.Items)-1].Seq
	}
}

// ClearFailedMark clears node i's failed mark for h (none is fine).
func (c *Cluster) ClearFailedMark(ctx context.Context, h string, i int) error {
	r, err := c.API.Do(ctx, "DELETE", c.path("/hierarchies/"+h+"/failed-marks/"+c.NodeIDs[i]), nil, 0, nil)
	if err != nil {
		return err
	}
	if r.Status != 204 && r.Status != 404 {
		return fmt.Errorf("clear node%d's failed mark: %d: %s", i+1, r.Status, r.Body)
	}
	return nil
}

// LastEventSeq returns the sequence number of the newest event (0: none).
func (c *Cluster) LastEventSeq(ctx context.Context, after int64) (int64, error) {
	evs, err := c.EventsAfter(ctx, after)
	if err != nil || len(evs) == 0 {
		return after, err
	}
	return evs[len(evs)-1].Seq, nil
}
