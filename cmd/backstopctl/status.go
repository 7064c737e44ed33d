package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

// status is backstopctl's crm_mon -1: one screen per cluster with what
// needs attention first (alerts), then the control plane, nodes, paths
// and hierarchies. --watch redraws it whenever the cluster's event stream
// says something changed (and every few seconds, for the heartbeat ages).

func newStatusCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [CLUSTER]",
		Short: "One screen per cluster: alerts, leader, nodes, paths, hierarchies (like crm_mon -1)",
		Long: `One screen per cluster: what needs attention first (alerts), then the
control plane's leader, the nodes, the communication paths and the
hierarchies with where they run. Without CLUSTER every cluster is shown.
--watch redraws live from the event stream until interrupted.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("unexpected argument %q", args[1])
			}
			return nil
		},
	}
	var watch bool
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw live from the event stream until interrupted")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		var ids []uuid.UUID
		if len(args) == 1 {
			id, err := a.cluster(ctx, args[0])
			if err != nil {
				return err
			}
			ids = []uuid.UUID{id}
		} else {
			cs, err := a.clusterNames(ctx)
			if err != nil {
				return err
			}
			for _, c := range cs {
				ids = append(ids, c.id)
			}
			if len(ids) == 0 {
				fmt.Fprintln(a.stdout, "No clusters yet: backstopctl clusters create --name NAME")
				return nil
			}
		}
		if !watch {
			return a.renderStatus(ctx, a.stdout, ids)
		}
		if a.jsonOutput() {
			return usageErrorf("--watch draws a screen: use it with -o table (events --follow -o json streams events)")
		}
		if len(ids) != 1 {
			return usageErrorf("--watch follows one cluster: name it")
		}
		return a.watchStatus(ctx, ids[0])
	}
	return cmd
}

// statusDoc is the -o json form of status: the API's objects, as they are.
type statusDoc struct {
	Cluster      client.Cluster       `json:"cluster"`
	ControlPlane *client.ControlPlane `json:"control_plane,omitempty"`
	Nodes        []client.Node        `json:"nodes"`
	Paths        []pathState          `json:"paths"`
	Hierarchies  []hierarchyState     `json:"hierarchies"`
	Alerts       []string             `json:"alerts"`
}

type pathState struct {
	client.Path
	// State is the sender's view: from its agent's last report when the
	// node read carries one, else from the path.up/path.down events.
	State string   `json:"state"`
	RttMs *float32 `json:"rtt_ms,omitempty"`
	Loss  *float32 `json:"loss,omitempty"`
}

type hierarchyState struct {
	client.Hierarchy
	FailedMarks []client.FailedMark `json:"failed_marks"`
}

func (a *app) renderStatus(ctx context.Context, w io.Writer, ids []uuid.UUID) error {
	var docs []statusDoc
	cp, _ := a.controlPlane(ctx) // viewer tokens may read it; absence is shown
	for _, id := range ids {
		d, err := a.statusOf(ctx, id)
		if err != nil {
			return err
		}
		d.ControlPlane = cp
		docs = append(docs, d)
	}
	if a.jsonOutput() {
		var b []byte
		var err error
		if len(docs) == 1 {
			b, err = json.Marshal(docs[0])
		} else {
			b, err = json.Marshal(map[string]any{"clusters": docs})
		}
		if err != nil {
			return err
		}
		return a.printJSON(b)
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Fprintln(w, strings.Repeat("─", 72))
		}
		if err := printStatus(w, d, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) controlPlane(ctx context.Context) (*client.ControlPlane, error) {
	resp, err := a.api.GetControlPlaneWithResponse(ctx)
	if err := a.check(resp, err, http.StatusOK); err != nil {
		return nil, err
	}
	return resp.JSON200, nil
}

// statusOf reads everything the screen shows of one cluster.
func (a *app) statusOf(ctx context.Context, id uuid.UUID) (statusDoc, error) {
	var d statusDoc
	resp, err := a.api.GetClusterWithResponse(ctx, id)
	if err := a.check(resp, err, http.StatusOK); err != nil {
		return d, err
	}
	d.Cluster = *resp.JSON200
	if d.Nodes, err = a.listNodes(ctx, id); err != nil {
		return d, err
	}
	paths, err := a.listPaths(ctx, id)
	if err != nil {
		return d, err
	}
	states, err := a.pathStates(ctx, id)
	if err != nil {
		return d, err
	}
	nodeUp := map[uuid.UUID]bool{}
	reports := map[uuid.UUID]client.PathReport{}
	for _, n := range d.Nodes {
		nodeUp[n.Id] = n.State == client.NodeStateUp
		if n.Agent != nil && n.Agent.Report != nil {
			for _, pr := range n.Agent.Report.Paths {
				reports[pr.PathId] = pr
			}
		}
	}
	for _, p := range paths {
		if !nodeUp[p.LocalNodeId] {
			// Its sender reports nothing now: its last report is stale.
			d.Paths = append(d.Paths, pathState{Path: p, State: "unknown (sender not up)"})
			continue
		}
		if pr, ok := reports[p.Id]; ok {
			d.Paths = append(d.Paths, pathState{Path: p, State: string(pr.State), RttMs: pr.RttMs, Loss: pr.Loss})
			continue
		}
		s := states[p.Id]
		if s == "" {
			// Agents report a path's changes, not its first state: a
			// path never reported down is shown by its sender's state.
			s = "not reported"
			for _, n := range d.Nodes {
				if n.Id == p.LocalNodeId && n.State == client.NodeStateUp {
					s = "up (never down)"
				}
			}
		}
		d.Paths = append(d.Paths, pathState{Path: p, State: s})
	}
	hs, err := a.listHierarchies(ctx, id)
	if err != nil {
		return d, err
	}
	for _, h := range hs {
		hsd := hierarchyState{Hierarchy: h, FailedMarks: []client.FailedMark{}}
		if e, err := a.api.ExplainHierarchyWithResponse(ctx, id, h.Id); err == nil && e.JSON200 != nil {
			hsd.FailedMarks = e.JSON200.FailedMarks
		}
		d.Hierarchies = append(d.Hierarchies, hsd)
	}
	d.Alerts = alerts(d)
	return d, nil
}

// pathStates returns each path direction's last reported state, from the
// path.up and path.down events its sending node's agent wrote.
func (a *app) pathStates(ctx context.Context, cid uuid.UUID) (map[uuid.UUID]string, error) {
	type seen struct {
		seq   int64
		state string
	}
	last := map[uuid.UUID]seen{}
	for _, typ := range []string{"path.up", "path.down"} {
		var after int64
		for {
			size := 1000
			resp, err := a.api.ListEventsWithResponse(ctx, cid, &client.ListEventsParams{After: &after, Type: &typ, Limit: &size})
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return nil, err
			}
			for _, ev := range resp.JSON200.Items {
				pid, err := uuid.Parse(ev.Subject["path_id"])
				if err != nil {
					continue
				}
				if ev.Seq > last[pid].seq {
					last[pid] = seen{ev.Seq, strings.TrimPrefix(ev.Type, "path.")}
				}
			}
			if len(resp.JSON200.Items) < size || resp.JSON200.LastSeq <= after {
				break
			}
			after = resp.JSON200.LastSeq
		}
	}
	out := map[uuid.UUID]string{}
	for id, s := range last {
		out[id] = s.state
	}
	return out, nil
}

// alerts lists what needs an operator, worst first.
func alerts(d statusDoc) []string {
	names := nodeNamer{}
	for _, n := range d.Nodes {
		names[n.Id] = n.Name
	}
	out := []string{}
	for _, n := range d.Nodes {
		switch n.State {
		case client.NodeStateDown:
			out = append(out, fmt.Sprintf("node %s is DOWN", n.Name))
		case client.NodeStateUnreachable:
			out = append(out, fmt.Sprintf("node %s is UNREACHABLE from the control plane (a peer still sees it)", n.Name))
		case client.NodeStatePending:
			out = append(out, fmt.Sprintf("node %s never enrolled (pending): start its agent with its enrollment token", n.Name))
		}
	}
	for _, h := range d.Hierarchies {
		p := h.Placement
		switch p.State {
		case client.PlacementStateFailed:
			out = append(out, fmt.Sprintf("hierarchy %s FAILED on %s: %s", h.Name, orDash(names.name(p.NodeId)), orDash(deref(p.Detail))))
		case client.PlacementStateInService:
			if p.NodeId != nil {
				for _, n := range d.Nodes {
					if n.Id == *p.NodeId && n.State != client.NodeStateUp && n.State != client.NodeStateMaintenance {
						out = append(out, fmt.Sprintf("hierarchy %s is placed on %s, which is %s", h.Name, n.Name, n.State))
					}
				}
			}
		}
		for _, m := range h.FailedMarks {
			out = append(out, fmt.Sprintf("hierarchy %s is marked failed on %s (%s): backstopctl failed-marks clear %s %s %s",
				h.Name, names.name(&m.NodeId), m.Reason, d.Cluster.Name, h.Name, names.name(&m.NodeId)))
		}
	}
	down := 0
	for _, p := range d.Paths {
		if p.State == "down" {
			down++
		}
	}
	if down > 0 {
		out = append(out, fmt.Sprintf("%d path direction(s) down", down))
	}
	return out
}

func printStatus(w io.Writer, d statusDoc, now time.Time) error {
	c := d.Cluster
	names := nodeNamer{}
	for _, n := range d.Nodes {
		names[n.Id] = n.Name
	}
	fmt.Fprintf(w, "Cluster %s  (%s)\n", c.Name, c.Id)
	fmt.Fprintf(w, "  timing %s (heartbeat %d ms, lease %d ms)  switchback %s  fencing %s\n",
		c.TimingProfile, c.Timing.HeartbeatMs, c.Timing.LeaseTtlMs, c.SwitchbackDefault, c.Fencing)
	if cp := d.ControlPlane; cp != nil {
		fmt.Fprintf(w, "  control plane: leader %s, term %d, %d replica(s)\n", orDash(deref(cp.LeaderId)), cp.Term, len(cp.Replicas))
	}
	fmt.Fprintf(w, "  as of %s\n", now.Format("2006-01-02 15:04:05 MST"))

	if len(d.Alerts) > 0 {
		fmt.Fprintf(w, "\nALERTS (%d)\n", len(d.Alerts))
		for _, al := range d.Alerts {
			fmt.Fprintf(w, "  ! %s\n", al)
		}
	}

	up := 0
	for _, n := range d.Nodes {
		if n.State == client.NodeStateUp {
			up++
		}
	}
	fmt.Fprintf(w, "\nNodes: %d, %d up\n", len(d.Nodes), up)
	t := newTable(w, "  NAME", "STATE", "LAST HEARTBEAT", "HOST", "AGENT")
	for _, n := range d.Nodes {
		state := strings.ToUpper(string(n.State))
		if n.State == client.NodeStateUp {
			state = "up"
		}
		if n.Maintenance != nil && *n.Maintenance && n.State != client.NodeStateMaintenance {
			state += " (MAINTENANCE)"
		}
		hb, host, ver := "", "", ""
		if ag := n.Agent; ag != nil {
			if ag.LastHeartbeatAt != nil {
				hb = fmt.Sprintf("%s ago", now.Sub(*ag.LastHeartbeatAt).Round(100*time.Millisecond))
			}
			host = ag.Facts.Hostname
			ver = ag.Facts.AgentVersion
		}
		t.row("  "+n.Name, state, hb, host, ver)
	}
	if err := t.flush(); err != nil {
		return err
	}

	if len(d.Paths) > 0 {
		fmt.Fprintf(w, "\nPaths: %d link(s)\n", len(d.Paths)/2)
		t = newTable(w, "  FROM", "TO", "ADDRESSES", "PRIO", "STATE", "RTT", "LOSS")
		ps := append([]pathState(nil), d.Paths...)
		sort.SliceStable(ps, func(i, j int) bool {
			if ps[i].LinkId != ps[j].LinkId {
				return ps[i].LinkId.String() < ps[j].LinkId.String()
			}
			return names.name(&ps[i].LocalNodeId) < names.name(&ps[j].LocalNodeId)
		})
		for _, p := range ps {
			st := p.State
			if st == "down" {
				st = "DOWN"
			}
			rtt, loss := "", ""
			if p.RttMs != nil {
				rtt = fmt.Sprintf("%.2f ms", *p.RttMs)
			}
			if p.Loss != nil {
				loss = fmt.Sprintf("%.0f%%", *p.Loss*100)
			}
			t.row("  "+names.name(&p.LocalNodeId), names.name(&p.RemoteNodeId), p.LocalAddress+" -> "+p.RemoteAddress, fmt.Sprint(p.Priority), st, rtt, loss)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\nHierarchies: %d\n", len(d.Hierarchies))
	if len(d.Hierarchies) > 0 {
		t = newTable(w, "  NAME", "STATE", "ON", "EPOCH", "PRIORITIES", "RESOURCES")
		for _, h := range d.Hierarchies {
			prios := append([]client.Priority(nil), h.Priorities...)
			sort.Slice(prios, func(i, j int) bool { return prios[i].Priority < prios[j].Priority })
			var pn []string
			for _, p := range prios {
				pn = append(pn, names.name(&p.NodeId))
			}
			var rn []string
			for _, r := range h.Resources {
				rn = append(rn, r.Name)
			}
			state := strings.ReplaceAll(string(h.Placement.State), "_", " ")
			if h.Placement.State == client.PlacementStateFailed {
				state = "FAILED"
			}
			t.row("  "+h.Name, state, names.name(h.Placement.NodeId), fmt.Sprint(h.Placement.Epoch), strings.Join(pn, " > "), abbrev(strings.Join(rn, ","), 40))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

// watchStatus redraws the status of cluster id on every event of its
// stream (batched over 100 ms) and every 5 s, until interrupted.
func (a *app) watchStatus(ctx context.Context, id uuid.UUID) error {
	changed := make(chan struct{}, 1)
	go func() {
		_ = a.followEvents(ctx, id, a.lastSeq(ctx, id), nil, nil, func(client.Event, []byte) error {
			select {
			case changed <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		var buf bytes.Buffer
		buf.WriteString("\x1b[H\x1b[2J") // home, clear screen
		if err := a.renderStatus(ctx, &buf, []uuid.UUID{id}); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(&buf, "\n(could not refresh: %v)\n", err)
		}
		buf.WriteString("\n(watching the event stream; Ctrl-C to stop)\n")
		if _, err := a.stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			select { // let a burst of events land before redrawing
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		case <-tick.C:
		}
	}
}

// lastSeq returns the seq of the cluster's newest event, so a watch
// starts from now (0 on error: the whole log then only redraws more).
func (a *app) lastSeq(ctx context.Context, id uuid.UUID) int64 {
	var after int64
	for {
		size := 1000
		resp, err := a.api.ListEventsWithResponse(ctx, id, &client.ListEventsParams{After: &after, Limit: &size})
		if err != nil || resp.JSON200 == nil {
			return after
		}
		if len(resp.JSON200.Items) < size || resp.JSON200.LastSeq <= after {
			return max(after, resp.JSON200.LastSeq)
		}
		after = resp.JSON200.LastSeq
	}
}
