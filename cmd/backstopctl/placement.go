package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

// The placement commands: switchover, in-service, out-of-service,
// maintenance on|off, explain, simulate, failed-marks clear and
// operations. An action answers with an operation; --wait follows it to
// its end, printing each change, and the exit status says how it ended:
// 0 succeeded, 1 failed, 3 still running when --wait-timeout ran out.

// waitFlags are --wait and --wait-timeout.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func addWaitFlags(cmd *cobra.Command) *waitFlags {
	w := &waitFlags{}
	cmd.Flags().BoolVarP(&w.wait, "wait", "w", false, "follow the operation to its end, printing its progress (exit 0 succeeded, 1 failed, 3 timed out)")
	cmd.Flags().DurationVar(&w.timeout, "wait-timeout", 5*time.Minute, "longest --wait")
	return w
}

// nodeArgFlag adds a flag naming a node (by name or id).
func addNodeFlag(cmd *cobra.Command, name, usage string) *string {
	var v string
	cmd.Flags().StringVar(&v, name, "", usage)
	return &v
}

func newSwitchoverCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "switchover CLUSTER HIERARCHY [--to NODE]",
		Short: "Move an in-service hierarchy to another node (planned, for maintenance)",
		Long: `Move an in-service hierarchy to another node: it is taken out of service on
its node, then brought in service on --to (default: the best candidate by
priority). The move is recorded as an incident with its timeline.`,
		Args: positional("CLUSTER", "HIERARCHY"),
	}
	to := addNodeFlag(cmd, "to", "target node (name or id); default: the best candidate")
	w := addWaitFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, hid, err := a.clusterChild(ctx, args, hierarchyKind)
		if err != nil {
			return err
		}
		body := client.SwitchoverRequest{}
		if *to != "" {
			nid, err := a.node(ctx, cid, *to)
			if err != nil {
				return err
			}
			body.NodeId = &nid
		}
		key := uuid.NewString()
		resp, err := a.api.SwitchoverHierarchyWithResponse(ctx, cid, hid, &client.SwitchoverHierarchyParams{IdempotencyKey: &key}, body)
		if err := a.check(resp, err, http.StatusAccepted); err != nil {
			return err
		}
		return a.followOperation(ctx, cid, resp.JSON202, resp.Body, w)
	}
	return cmd
}

func newInServiceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "in-service CLUSTER HIERARCHY --node NODE",
		Short: "Bring a hierarchy in service on a node",
		Args:  positional("CLUSTER", "HIERARCHY"),
	}
	node := addNodeFlag(cmd, "node", "node to bring it in service on (name or id)")
	_ = cmd.MarkFlagRequired("node")
	w := addWaitFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, hid, err := a.clusterChild(ctx, args, hierarchyKind)
		if err != nil {
			return err
		}
		nid, err := a.node(ctx, cid, *node)
		if err != nil {
			return err
		}
		key := uuid.NewString()
		resp, err := a.api.BringHierarchyInServiceWithResponse(ctx, cid, hid, &client.BringHierarchyInServiceParams{IdempotencyKey: &key},
			client.PlacementRequest{NodeId: nid})
		if err := a.check(resp, err, http.StatusAccepted); err != nil {
			return err
		}
		return a.followOperation(ctx, cid, resp.JSON202, resp.Body, w)
	}
	return cmd
}

func newOutOfServiceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "out-of-service CLUSTER HIERARCHY",
		Short: "Take a hierarchy out of service (its service stops and stays stopped)",
		Args:  positional("CLUSTER", "HIERARCHY"),
	}
	w := addWaitFlags(cmd)
	yes := addYesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, hid, err := a.clusterChild(ctx, args, hierarchyKind)
		if err != nil {
			return err
		}
		if !*yes {
			where := ""
			if g, err := a.api.GetHierarchyWithResponse(ctx, cid, hid); err == nil && g.JSON200 != nil && g.JSON200.Placement.NodeId != nil {
				where = " on node " + a.nodeNamer(ctx, cid).name(g.JSON200.Placement.NodeId)
			}
			if err := a.confirm(false, fmt.Sprintf("Take hierarchy %s out of service%s: its resources are stopped and nothing restarts them\nuntil it is brought in service again (no failover).", args[1], where)); err != nil {
				return err
			}
		}
		key := uuid.NewString()
		resp, err := a.api.TakeHierarchyOutOfServiceWithResponse(ctx, cid, hid, &client.TakeHierarchyOutOfServiceParams{IdempotencyKey: &key})
		if err := a.check(resp, err, http.StatusAccepted); err != nil {
			return err
		}
		return a.followOperation(ctx, cid, resp.JSON202, resp.Body, w)
	}
	return cmd
}

// followOperation prints an accepted operation and, with --wait, follows
// it to its end.
func (a *app) followOperation(ctx context.Context, cid uuid.UUID, op *client.Operation, body []byte, w *waitFlags) error {
	names := a.nodeNamer(ctx, cid)
	if !w.wait {
		if a.jsonOutput() {
			return a.printJSON(body)
		}
		fmt.Fprintf(a.stdout, "Operation %s accepted: %s.\n", op.Id, describeOperation(op, names))
		fmt.Fprintf(a.stdout, "Follow it with: backstopctl operations get %s --wait\n", op.Id)
		return nil
	}
	ops, err := a.waitOperations(ctx, []client.Operation{*op}, names, w.timeout)
	if a.jsonOutput() && len(ops) == 1 {
		if b, merr := jsonMarshal(ops[0]); merr == nil {
			if perr := a.printJSON(b); perr != nil {
				return perr
			}
		}
	}
	return err
}

// describeOperation says what an operation does, in words.
func describeOperation(op *client.Operation, names nodeNamer) string {
	switch op.Kind {
	case client.OperationKindSwitchover:
		// node_id is where the command went: the target, unless
		// target_node_id names it.
		to := &op.NodeId
		if op.TargetNodeId != nil {
			to = op.TargetNodeId
		}
		return "switchover to " + names.name(to)
	case client.OperationKindInService:
		return "bring in service on " + names.name(&op.NodeId)
	case client.OperationKindOutOfService:
		return "take out of service on " + names.name(&op.NodeId)
	}
	return string(op.Kind) + " on " + names.name(&op.NodeId)
}

// exitError carries an exit status other than 1.
type exitError struct {
	err  error
	code int
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

const exitTimeout = 3

// waitOperations polls operations until each ended, printing each change
// (state and steps) as one line. It returns the last state of each and an
// error when one failed (exit 1) or the time ran out (exit 3).
func (a *app) waitOperations(ctx context.Context, ops []client.Operation, names nodeNamer, limit time.Duration) ([]client.Operation, error) {
	out := a.stderr // progress goes to stderr, so -o json stays clean
	if !a.jsonOutput() {
		out = a.stdout
	}
	deadline := time.Now().Add(limit)
	seenSteps := make([]int, len(ops))
	seenState := make([]client.OperationState, len(ops))
	label := func(i int) string {
		if len(ops) == 1 {
			return ""
		}
		return fmt.Sprintf("[%d/%d] ", i+1, len(ops))
	}
	report := func(i int, op client.Operation) {
		if op.State != seenState[i] {
			fmt.Fprintf(out, "%s%s  %s: %s\n", label(i), time.Now().Format("15:04:05.000"), describeOperation(&op, names), op.State)
			seenState[i] = op.State
		}
		for ; seenSteps[i] < len(op.Steps); seenSteps[i]++ {
			s := op.Steps[seenSteps[i]]
			res := "ok"
			if !s.Ok {
				res = "FAILED"
			}
			line := fmt.Sprintf("%s    %s %s: %s", label(i), s.Action, s.Resource, res)
			if s.DurationMs != nil {
				line += fmt.Sprintf(" (%d ms)", *s.DurationMs)
			}
			if s.Detail != nil && *s.Detail != "" {
				line += " " + *s.Detail
			}
			fmt.Fprintln(out, line)
		}
	}
	for i, op := range ops {
		report(i, op)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		open := 0
		for i := range ops {
			if ops[i].State == client.OperationStateSucceeded || ops[i].State == client.OperationStateFailed {
				continue
			}
			resp, err := a.api.GetOperationWithResponse(ctx, ops[i].Id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return ops, err
			}
			ops[i] = *resp.JSON200
			report(i, ops[i])
			if ops[i].State != client.OperationStateSucceeded && ops[i].State != client.OperationStateFailed {
				open++
			}
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			return ops, &exitError{code: exitTimeout, err: fmt.Errorf("%d operation(s) still running after %s (--wait-timeout); they go on: backstopctl operations get ID --wait", open, limit)}
		}
		select {
		case <-ctx.Done():
			return ops, &exitError{code: exitTimeout, err: errors.New("interrupted while waiting; the operation goes on")}
		case <-tick.C:
		}
	}
	var failed []string
	for _, op := range ops {
		if op.State == client.OperationStateFailed {
			d := describeOperation(&op, names)
			if op.Detail != nil && *op.Detail != "" {
				d += ": " + *op.Detail
			}
			failed = append(failed, d)
		}
	}
	if len(failed) > 0 {
		return ops, fmt.Errorf("failed: %s", strings.Join(failed, "; "))
	}
	return ops, nil
}

func newOperationsCmd(a *app) *cobra.Command {
	cmd := groupCmd("operations", "Follow placement operations", "operation", "op")
	get := &cobra.Command{
		Use:   "get OPERATION",
		Short: "Show an operation, or follow it with --wait",
		Args:  positional("OPERATION"),
	}
	w := addWaitFlags(get)
	get.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := parseID("operation id", args[0])
		if err != nil {
			return err
		}
		resp, err := a.api.GetOperationWithResponse(cmd.Context(), id)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		op := resp.JSON200
		if w.wait {
			return a.followOperation(cmd.Context(), op.ClusterId, op, resp.Body, w)
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		names := a.nodeNamer(cmd.Context(), op.ClusterId)
		if err := printFields(a.stdout,
			field{"ID", op.Id.String()},
			field{"What", describeOperation(op, names)},
			field{"Hierarchy", op.HierarchyId.String()},
			field{"State", string(op.State)},
			field{"Epoch", fmt.Sprint(op.Epoch)},
			field{"Detail", deref(op.Detail)},
			field{"Created", fmtTime(op.CreatedAt)},
			field{"Updated", fmtTime(op.UpdatedAt)},
		); err != nil {
			return err
		}
		if len(op.Steps) > 0 {
			fmt.Fprintln(a.stdout, "\nSteps:")
			t := newTable(a.stdout, "  RESOURCE", "ACTION", "OK", "DURATION", "DETAIL")
			for _, s := range op.Steps {
				d := ""
				if s.DurationMs != nil {
					d = fmt.Sprintf("%d ms", *s.DurationMs)
				}
				t.row("  "+s.Resource, string(s.Action), fmt.Sprint(s.Ok), d, deref(s.Detail))
			}
			return t.flush()
		}
		return nil
	}
	cmd.AddCommand(get)
	return cmd
}

func newMaintenanceCmd(a *app) *cobra.Command {
	cmd := groupCmd("maintenance", "Put a node in maintenance (drain it) or end its maintenance")
	on := &cobra.Command{
		Use:   "on CLUSTER NODE",
		Short: "Put a node in maintenance: no candidate for anything, its hierarchies switched over",
		Args:  positional("CLUSTER", "NODE"),
	}
	w := addWaitFlags(on)
	on.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, nid, err := a.clusterChild(ctx, args, nodeKind)
		if err != nil {
			return err
		}
		resp, err := a.api.StartMaintenanceWithResponse(ctx, cid, nid, &client.StartMaintenanceParams{})
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		res := resp.JSON200
		names := a.nodeNamer(ctx, cid)
		if !w.wait {
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			fmt.Fprintf(a.stdout, "Node %s is in maintenance; %d hierarchy(ies) being switched over.\n", res.Node.Name, len(res.Operations))
			for _, op := range res.Operations {
				fmt.Fprintf(a.stdout, "  operation %s: %s\n", op.Id, describeOperation(&op, names))
			}
			return nil
		}
		out := a.stdout
		if a.jsonOutput() {
			out = a.stderr
		}
		fmt.Fprintf(out, "Node %s is in maintenance; draining %d hierarchy(ies).\n", res.Node.Name, len(res.Operations))
		ops, err := a.waitOperations(ctx, res.Operations, names, w.timeout)
		done := 0
		for _, op := range ops {
			if op.State == client.OperationStateSucceeded {
				done++
			}
		}
		fmt.Fprintf(out, "Drained %d of %d.\n", done, len(ops))
		if a.jsonOutput() {
			res.Operations = ops
			if b, merr := jsonMarshal(res); merr == nil {
				_ = a.printJSON(b)
			}
		}
		return err
	}
	off := &cobra.Command{
		Use:   "off CLUSTER NODE",
		Short: "End a node's maintenance: it is a candidate again",
		Args:  positional("CLUSTER", "NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cid, nid, err := a.clusterChild(cmd.Context(), args, nodeKind)
			if err != nil {
				return err
			}
			resp, err := a.api.EndMaintenanceWithResponse(cmd.Context(), cid, nid)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			fmt.Fprintf(a.stdout, "Node %s left maintenance (state %s).\n", resp.JSON200.Name, resp.JSON200.State)
			return nil
		},
	}
	cmd.AddCommand(on, off)
	return cmd
}

func newExplainCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "explain CLUSTER HIERARCHY",
		Short: "Why a hierarchy is where it is, and where it would go next",
		Args:  positional("CLUSTER", "HIERARCHY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cid, hid, err := a.clusterChild(ctx, args, hierarchyKind)
			if err != nil {
				return err
			}
			resp, err := a.api.ExplainHierarchyWithResponse(ctx, cid, hid)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printExplanation(args[1], resp.JSON200, a.nodeNamer(ctx, cid))
		},
	}
}

func (a *app) printExplanation(name string, e *client.Explanation, names nodeNamer) error {
	w := a.stdout
	p := e.Placement
	switch {
	case p.NodeId == nil:
		fmt.Fprintf(w, "Hierarchy %s was never placed (%s, epoch %d).\n", name, p.State, p.Epoch)
	default:
		fmt.Fprintf(w, "Hierarchy %s is %s on %s (epoch %d, since %s).\n", name, strings.ReplaceAll(string(p.State), "_", " "), names.name(p.NodeId), p.Epoch, fmtTime(p.UpdatedAt))
	}
	if p.Detail != nil && *p.Detail != "" {
		fmt.Fprintf(w, "  %s\n", *p.Detail)
	}
	if d := e.LastDecision; d != nil {
		fmt.Fprintf(w, "\nLast decision (%s, %s", d.Kind, fmtTime(d.At))
		if d.Term != nil {
			fmt.Fprintf(w, ", leader term %d", *d.Term)
		}
		fmt.Fprintf(w, "): %s", d.Reason)
		if d.FromNodeId != nil || d.ToNodeId != nil {
			fmt.Fprintf(w, "; from %s to %s", orDash(names.name(d.FromNodeId)), orDash(names.name(d.ToNodeId)))
		}
		fmt.Fprintln(w, ".")
		if err := candidatesTable(w, d.Candidates); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(w, "\nNo decision about it was recorded yet.")
	}
	if len(e.FailedMarks) > 0 {
		fmt.Fprintln(w, "\nFailed on (not a candidate until cleared with: backstopctl failed-marks clear CLUSTER HIERARCHY NODE):")
		for _, m := range e.FailedMarks {
			fmt.Fprintf(w, "  %s since %s: %s\n", names.name(&m.NodeId), fmtTime(m.At), m.Reason)
		}
	}
	if e.NextNodeId != nil {
		fmt.Fprintf(w, "\nIf %s failed now, it would go to %s.\n", orDash(names.name(p.NodeId)), names.name(e.NextNodeId))
	} else {
		fmt.Fprintln(w, "\nIf its node failed now, it would go nowhere: no candidate can take it.")
	}
	return candidatesTable(w, e.NextCandidates)
}

func candidatesTable(w interface{ Write([]byte) (int, error) }, cs []client.Candidate) error {
	if len(cs) == 0 {
		return nil
	}
	t := newTable(w, "  PRIORITY", "NODE", "VERDICT")
	for _, c := range cs {
		v := "eligible"
		if c.Rejected != nil && *c.Rejected != "" {
			v = "rejected: " + *c.Rejected
		}
		t.row(fmt.Sprintf("  %d", c.Priority), c.Node, v)
	}
	return t.flush()
}

func newSimulateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "simulate CLUSTER [--fail-node NODE]... [--fail-path PATH]... [--fail-resource HIERARCHY]...",
		Short: "What would happen if nodes, paths or a hierarchy's resources failed (changes nothing)",
		Args:  positional("CLUSTER"),
	}
	var nodes, paths, res []string
	cmd.Flags().StringArrayVar(&nodes, "fail-node", nil, "a node that crashes (name or id; repeatable)")
	cmd.Flags().StringArrayVar(&paths, "fail-path", nil, "a path that dies (either direction's id; repeatable)")
	cmd.Flags().StringArrayVar(&res, "fail-resource", nil, "a hierarchy whose resources fail past local recovery where it runs (name or id; repeatable)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if len(nodes)+len(paths)+len(res) == 0 {
			return usageErrorf("nothing to simulate: give --fail-node, --fail-path or --fail-resource")
		}
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return err
		}
		var req client.SimulationRequest
		var nf, pf, rf []uuid.UUID
		for _, n := range nodes {
			id, err := a.node(ctx, cid, n)
			if err != nil {
				return err
			}
			nf = append(nf, id)
		}
		for _, p := range paths {
			id, err := parseID("path id", p)
			if err != nil {
				return err
			}
			pf = append(pf, id)
		}
		for _, h := range res {
			id, err := a.hierarchy(ctx, cid, h)
			if err != nil {
				return err
			}
			rf = append(rf, id)
		}
		req.NodeFailures, req.PathFailures, req.ResourceFailures = ptrIf(nf != nil, nf), ptrIf(pf != nil, pf), ptrIf(rf != nil, rf)
		resp, err := a.api.SimulateFailuresWithResponse(ctx, cid, req)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		names := a.nodeNamer(ctx, cid)
		hnames := map[uuid.UUID]string{}
		if hs, err := a.listHierarchies(ctx, cid); err == nil {
			for _, h := range hs {
				hnames[h.Id] = h.Name
			}
		}
		hname := func(id uuid.UUID) string {
			if n, ok := hnames[id]; ok {
				return n
			}
			return id.String()
		}
		r := resp.JSON200
		w := a.stdout
		if len(r.Decisions) == 0 {
			fmt.Fprintln(w, "Nothing would move.")
		} else {
			fmt.Fprintln(w, "Decisions:")
			for _, d := range r.Decisions {
				fmt.Fprintf(w, "  %s: %s (%s)", hname(d.HierarchyId), d.Kind, d.Reason)
				if d.ToNodeId != nil {
					fmt.Fprintf(w, " -> %s", names.name(d.ToNodeId))
				}
				fmt.Fprintln(w)
			}
		}
		fmt.Fprintln(w, "\nResulting placements:")
		t := newTable(w, "  HIERARCHY", "NODE", "STATE")
		for _, p := range r.Placements {
			t.row("  "+hname(p.HierarchyId), names.name(p.NodeId), string(p.State))
		}
		return t.flush()
	}
	return cmd
}

func newFailedMarksCmd(a *app) *cobra.Command {
	cmd := groupCmd("failed-marks", "Nodes a hierarchy failed on (see explain)", "failed-mark")
	clear := &cobra.Command{
		Use:   "clear CLUSTER HIERARCHY NODE",
		Short: "Make a node a candidate for a hierarchy again, after fixing what failed there",
		Args:  positional("CLUSTER", "HIERARCHY", "NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cid, hid, err := a.clusterChild(ctx, args[:2], hierarchyKind)
			if err != nil {
				return err
			}
			nid, err := a.node(ctx, cid, args[2])
			if err != nil {
				return err
			}
			resp, err := a.api.ClearFailedMarkWithResponse(ctx, cid, hid, nid)
			if err := a.check(resp, err, http.StatusNoContent); err != nil {
				return err
			}
			return a.deleted("failed mark of hierarchy %s on node %s cleared", args[1], args[2])
		},
	}
	cmd.AddCommand(clear)
	return cmd
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
