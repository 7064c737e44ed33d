package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
	"github.com/backstop-ha/backstop/server/failover"
)

// placementHandlers are operators' actions on where hierarchies run
// (bring in service, take out, switch over, maintenance, failed marks)
// and the engine's views (operations, explain, simulate, incidents).
type placementHandlers struct {
	store placementStore
	log   *slog.Logger
	// sign signs the commands that moves queue.
	sign    backstop.Signer
	waiters *waiters
}

// placementStore is what placementHandlers read and write.
type placementStore interface {
	EngineStore
	FindNodeByID(ctx context.Context, clusterID, id string) (backstop.Node, error)
	ListPaths(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Path, string, error)
}

// BringHierarchyInService places a hierarchy on a node by hand.
func (ph *placementHandlers) BringHierarchyInService(ctx context.Context, r api.BringHierarchyInServiceRequestObject) (api.BringHierarchyInServiceResponseObject, error) {
	op, err := ph.store.PlaceHierarchy(ctx, backstop.PlaceRequest{ClusterID: r.ClusterId.String(), HierarchyID: r.HierarchyId.String(),
		Kind: backstop.OperationInService, NodeID: r.Body.NodeId.String()}, ph.sign)
	if err != nil {
		return nil, err
	}
	ph.waiters.wake(op.NodeID) // this replica at once; others through NOTIFY
	return api.BringHierarchyInService202JSONResponse{Body: toAPIOperation(op), Headers: api.BringHierarchyInService202ResponseHeaders{Location: location("/v1/operations/%s", op.ID)}}, nil
}

// TakeHierarchyOutOfService takes a hierarchy out of service by hand.
func (ph *placementHandlers) TakeHierarchyOutOfService(ctx context.Context, r api.TakeHierarchyOutOfServiceRequestObject) (api.TakeHierarchyOutOfServiceResponseObject, error) {
	op, err := ph.store.PlaceHierarchy(ctx, backstop.PlaceRequest{ClusterID: r.ClusterId.String(), HierarchyID: r.HierarchyId.String(),
		Kind: backstop.OperationOutOfService}, ph.sign)
	if err != nil {
		return nil, err
	}
	ph.waiters.wake(op.NodeID)
	return api.TakeHierarchyOutOfService202JSONResponse{Body: toAPIOperation(op), Headers: api.TakeHierarchyOutOfService202ResponseHeaders{Location: location("/v1/operations/%s", op.ID)}}, nil
}

// GetOperation returns an operation.
func (ph *placementHandlers) GetOperation(ctx context.Context, r api.GetOperationRequestObject) (api.GetOperationResponseObject, error) {
	op, err := ph.store.FindOperation(ctx, r.OperationId.String())
	if err != nil {
		return nil, err
	}
	if !backstop.ActorFrom(ctx).Sees(op.ClusterID) {
		// As if it did not exist: a scoped token learns nothing of other
		// clusters.
		return nil, fmt.Errorf("operation %s: %w", r.OperationId, backstop.ErrNotFound)
	}
	return api.GetOperation200JSONResponse(toAPIOperation(op)), nil
}

func toAPIOperation(o backstop.Operation) api.Operation {
	out := api.Operation{
		Id: apiID(o.ID), ClusterId: apiID(o.ClusterID), HierarchyId: apiID(o.HierarchyID), NodeId: apiID(o.NodeID),
		Kind: api.OperationKind(o.Kind), State: api.OperationState(o.State), Epoch: o.Epoch, CommandId: optID(o.CommandID),
		Steps: make([]api.StepResult, len(o.Steps)), CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
	if o.Detail != "" {
		out.Detail = ptr(o.Detail)
	}
	for i, step := range o.Steps {
		out.Steps[i] = api.StepResult{Resource: step.Resource, Action: api.StepResultAction(step.Action), Ok: step.OK, DurationMs: ptr(step.DurationMS)}
		if step.Detail != "" {
			out.Steps[i].Detail = ptr(step.Detail)
		}
	}
	return out
}

// hierarchyStatus reads a cluster's status and the hierarchy id in it
// (backstop.ErrNotFound when the cluster has no such hierarchy).
func (ph *placementHandlers) hierarchyStatus(ctx context.Context, clusterID, id string) (backstop.ClusterStatus, backstop.HierarchyStatus, error) {
	status, err := ph.store.ClusterStatus(ctx, clusterID)
	if err != nil {
		return status, backstop.HierarchyStatus{}, err
	}
	for _, h := range status.Hierarchies {
		if h.ID == id {
			return status, h, nil
		}
	}
	return status, backstop.HierarchyStatus{}, fmt.Errorf("hierarchy %s: %w", id, backstop.ErrNotFound)
}

// switchover starts an operator's move of h to target ("" for the best
// candidate).
func (ph *placementHandlers) switchover(ctx context.Context, status backstop.ClusterStatus, h backstop.HierarchyStatus, target, why string) (*backstop.Operation, error) {
	if h.Placement.State != backstop.PlacementInService {
		return nil, fmt.Errorf("%w: hierarchy %q is %s, not in service; bring it in service instead", backstop.ErrConflict, h.Name, h.Placement.State)
	}
	if h.MoveTo != "" {
		return nil, fmt.Errorf("%w: hierarchy %q is already moving", backstop.ErrConflict, h.Name)
	}
	snap := failover.SnapshotOf(status)
	best, cs := failover.Next(snap, h.ID)
	if target == "" {
		if best == "" {
			return nil, backstop.Invalid("/node_id", "no node can take hierarchy %q: %s", h.Name, rejections(cs))
		}
		target = best
	} else {
		i := slices.IndexFunc(cs, func(c failover.Candidate) bool { return c.NodeID == target })
		switch {
		case i < 0:
			return nil, backstop.Invalid("/node_id", "node %s has no priority for hierarchy %q", target, h.Name)
		case cs[i].Rejected != "":
			return nil, backstop.Invalid("/node_id", "node %s cannot take hierarchy %q: %s", cs[i].Node, h.Name, cs[i].Rejected)
		}
	}
	d := failover.Decision{HierarchyID: h.ID, Hierarchy: h.Name, Kind: "switchover", From: h.Placement.NodeID, To: target, Reason: why, Candidates: cs}
	rec := failover.Record(status, d, fmt.Sprintf("switchover|%s|%d", target, h.Placement.Epoch))
	_, op, err := ph.store.StartMove(ctx, 0, backstop.MoveRequest{Kind: backstop.MoveSwitchover, ClusterID: status.Cluster.ID, HierarchyID: h.ID,
		ExpectEpoch: h.Placement.Epoch, To: target, DetectedAt: time.Now(), Decision: rec, WithOperation: true}, ph.sign)
	if err != nil {
		return nil, err
	}
	ph.waiters.wake(h.Placement.NodeID)
	return op, nil
}

func rejections(cs []failover.Candidate) string {
	out := ""
	for _, c := range cs {
		if out != "" {
			out += "; "
		}
		out += fmt.Sprintf("%s (priority %d): %s", c.Node, c.Priority, c.Rejected)
	}
	if out == "" {
		return "it has no other node"
	}
	return out
}

// SwitchoverHierarchy moves a hierarchy for maintenance.
func (ph *placementHandlers) SwitchoverHierarchy(ctx context.Context, r api.SwitchoverHierarchyRequestObject) (api.SwitchoverHierarchyResponseObject, error) {
	status, h, err := ph.hierarchyStatus(ctx, r.ClusterId.String(), r.HierarchyId.String())
	if err != nil {
		return nil, err
	}
	target := ""
	if r.Body != nil && r.Body.NodeId != nil {
		target = r.Body.NodeId.String()
	}
	op, err := ph.switchover(ctx, status, h, target, "switchover requested by "+backstop.ActorFrom(ctx).String())
	if err != nil {
		return nil, err
	}
	return api.SwitchoverHierarchy202JSONResponse{Body: toAPIOperation(*op), Headers: api.SwitchoverHierarchy202ResponseHeaders{Location: location("/v1/operations/%s", op.ID)}}, nil
}

// ExplainHierarchy says why a hierarchy is where it is.
func (ph *placementHandlers) ExplainHierarchy(ctx context.Context, r api.ExplainHierarchyRequestObject) (api.ExplainHierarchyResponseObject, error) {
	status, h, err := ph.hierarchyStatus(ctx, r.ClusterId.String(), r.HierarchyId.String())
	if err != nil {
		return nil, err
	}
	out := api.ExplainHierarchy200JSONResponse{HierarchyId: apiID(h.ID), FailedMarks: []api.FailedMark{}, NextCandidates: []api.Candidate{},
		Placement: toAPIHierarchy(h.Hierarchy).Placement}
	marks, err := ph.store.FailedMarks(ctx, h.ID)
	if err != nil {
		return nil, err
	}
	for _, m := range marks {
		out.FailedMarks = append(out.FailedMarks, api.FailedMark{NodeId: apiID(m.NodeID), Reason: m.Reason, At: m.At})
	}
	if d, ok, err := ph.store.LastDecision(ctx, h.ID); err != nil {
		return nil, err
	} else if ok {
		ad, err := toAPIDecision(d)
		if err != nil {
			return nil, err
		}
		out.LastDecision = &ad
	}
	next, cs := failover.Next(failover.SnapshotOf(status), h.ID)
	out.NextNodeId = optID(next)
	out.NextCandidates = toAPICandidates(cs)
	return out, nil
}

func toAPICandidates(cs []failover.Candidate) []api.Candidate {
	out := make([]api.Candidate, len(cs))
	for i, c := range cs {
		out[i] = api.Candidate{NodeId: apiID(c.NodeID), Node: c.Node, Priority: c.Priority}
		if c.Rejected != "" {
			out[i].Rejected = ptr(c.Rejected)
		}
	}
	return out
}

func toAPIDecision(d backstop.DecisionRecord) (api.Decision, error) {
	out := api.Decision{HierarchyId: apiID(d.HierarchyID), Kind: d.Kind, Reason: d.Reason, At: d.At, FromNodeId: optID(d.From), ToNodeId: optID(d.To)}
	if d.Term != 0 {
		out.Term = ptr(d.Term)
	}
	var cs []failover.Candidate
	if err := json.Unmarshal(d.Candidates, &cs); err != nil {
		return out, fmt.Errorf("decision candidates: %w", err)
	}
	out.Candidates = toAPICandidates(cs)
	if len(d.Inputs) > 0 {
		var in map[string]any
		if err := json.Unmarshal(d.Inputs, &in); err != nil {
			return out, fmt.Errorf("decision inputs: %w", err)
		}
		out.Inputs = &in
	}
	return out, nil
}

// ClearFailedMark makes a node a candidate for a hierarchy again.
func (ph *placementHandlers) ClearFailedMark(ctx context.Context, r api.ClearFailedMarkRequestObject) (api.ClearFailedMarkResponseObject, error) {
	if err := ph.store.ClearFailedMark(ctx, r.ClusterId.String(), r.HierarchyId.String(), r.NodeId.String()); err != nil {
		return nil, err
	}
	return api.ClearFailedMark204Response{}, nil
}

// StartMaintenance puts a node in maintenance and switches its
// hierarchies away.
func (ph *placementHandlers) StartMaintenance(ctx context.Context, r api.StartMaintenanceRequestObject) (api.StartMaintenanceResponseObject, error) {
	cid, nid := r.ClusterId.String(), r.NodeId.String()
	n, err := ph.store.SetMaintenance(ctx, cid, nid, true)
	if err != nil {
		return nil, err
	}
	status, err := ph.store.ClusterStatus(ctx, cid)
	if err != nil {
		return nil, err
	}
	out := api.StartMaintenance200JSONResponse{Operations: []api.Operation{}}
	var ids []string
	for _, h := range status.Hierarchies {
		if h.Placement.NodeID != nid || h.Placement.State != backstop.PlacementInService || h.MoveTo != "" {
			continue
		}
		op, err := ph.switchover(ctx, status, h, "", "node "+n.Name+" enters maintenance")
		if err != nil {
			// Leave it running where it is rather than stop it with
			// nowhere to go; the log and the event trail say why.
			ph.log.WarnContext(ctx, "maintenance: hierarchy stays on the node", "hierarchy", h.Name, "err", err)
			continue
		}
		ids = append(ids, op.ID)
	}
	if deref(r.Params.Wait, false) {
		deadline := time.Now().Add(time.Duration(deref(r.Params.TimeoutS, 60)) * time.Second)
		for time.Now().Before(deadline) {
			done, err := ph.store.OperationsDone(ctx, ids)
			if err != nil {
				return nil, err
			}
			if done {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	for _, id := range ids {
		op, err := ph.store.FindOperation(ctx, id)
		if err != nil {
			return nil, err
		}
		out.Operations = append(out.Operations, toAPIOperation(op))
	}
	if n, err = ph.store.FindNodeByID(ctx, cid, nid); err != nil {
		return nil, err
	}
	out.Node = toAPINode(n)
	return out, nil
}

// EndMaintenance makes a node a candidate again.
func (ph *placementHandlers) EndMaintenance(ctx context.Context, r api.EndMaintenanceRequestObject) (api.EndMaintenanceResponseObject, error) {
	n, err := ph.store.SetMaintenance(ctx, r.ClusterId.String(), r.NodeId.String(), false)
	if err != nil {
		return nil, err
	}
	return api.EndMaintenance200JSONResponse(toAPINode(n)), nil
}

// SimulateFailures answers "what if" without changing anything.
func (ph *placementHandlers) SimulateFailures(ctx context.Context, r api.SimulateFailuresRequestObject) (api.SimulateFailuresResponseObject, error) {
	cid := r.ClusterId.String()
	status, err := ph.store.ClusterStatus(ctx, cid)
	if err != nil {
		return nil, err
	}
	snap := failover.SnapshotOf(status)
	v := &backstop.ValidationError{}
	for i, id := range deref(r.Body.NodeFailures, nil) {
		n, ok := snap.Nodes[id.String()]
		if !ok {
			v.Add(fmt.Sprintf("/node_failures/%d", i), "node %s is not a node of this cluster", id)
			continue
		}
		n.State, n.PathsAlive = backstop.NodeDown, false
		snap.Nodes[n.ID] = n
	}
	if pf := deref(r.Body.PathFailures, nil); len(pf) > 0 {
		paths, _, err := ph.store.ListPaths(ctx, cid, backstop.Page{Limit: 100000})
		if err != nil {
			return nil, err
		}
		dead := map[string]bool{}
		for i, id := range pf {
			found := false
			for _, p := range paths {
				if p.ID == id.String() || p.ReverseID == id.String() {
					dead[p.ID], found = true, true
				}
			}
			if !found {
				v.Add(fmt.Sprintf("/path_failures/%d", i), "path %s is not a path of this cluster", id)
			}
		}
		alive := map[string]bool{}
		for _, p := range paths {
			if !dead[p.ID] {
				alive[p.RemoteNodeID] = true
			}
		}
		for id, n := range snap.Nodes {
			if !alive[id] {
				n.PathsAlive = false
				snap.Nodes[id] = n
			}
		}
	}
	for i, id := range deref(r.Body.ResourceFailures, nil) {
		j := slices.IndexFunc(snap.Hierarchies, func(h failover.HierarchyView) bool { return h.ID == id.String() })
		if j < 0 {
			v.Add(fmt.Sprintf("/resource_failures/%d", i), "hierarchy %s is not a hierarchy of this cluster", id)
			continue
		}
		h := &snap.Hierarchies[j]
		if h.Placement.NodeID == "" {
			v.Add(fmt.Sprintf("/resource_failures/%d", i), "hierarchy %s is not placed on any node", h.Name)
			continue
		}
		h.Placement.State, h.Placement.Detail = backstop.PlacementFailed, "simulated resource failure"
		h.FailedOn[h.Placement.NodeID] = true
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	ds := failover.Decide(snap)
	out := api.SimulateFailures200JSONResponse{Decisions: []api.Decision{}, Placements: []api.SimulatedPlacement{}}
	final := map[string]backstop.Placement{}
	for _, h := range snap.Hierarchies {
		final[h.ID] = h.Placement
	}
	for _, d := range ds {
		out.Decisions = append(out.Decisions, api.Decision{HierarchyId: apiID(d.HierarchyID), Kind: d.Kind, Reason: d.Reason,
			FromNodeId: optID(d.From), ToNodeId: optID(d.To), Candidates: toAPICandidates(d.Candidates), At: time.Now()})
		switch d.Kind {
		case failover.KindFailover, failover.KindSwitchback:
			final[d.HierarchyID] = backstop.Placement{NodeID: d.To, State: backstop.PlacementInService}
		case failover.KindFail:
			final[d.HierarchyID] = backstop.Placement{State: backstop.PlacementFailed}
		}
	}
	for _, h := range snap.Hierarchies {
		p := final[h.ID]
		out.Placements = append(out.Placements, api.SimulatedPlacement{HierarchyId: apiID(h.ID), NodeId: optID(p.NodeID), State: api.PlacementState(p.State)})
	}
	return out, nil
}

// ListIncidents lists a cluster's incidents.
func (ph *placementHandlers) ListIncidents(ctx context.Context, r api.ListIncidentsRequestObject) (api.ListIncidentsResponseObject, error) {
	is, next, err := ph.store.ListIncidents(ctx, r.ClusterId.String(), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListIncidents200JSONResponse{Items: make([]api.Incident, len(is)), NextCursor: nextCursor(next)}
	for i, x := range is {
		out.Items[i] = api.Incident{Id: apiID(x.ID), ClusterId: apiID(x.ClusterID), HierarchyId: apiID(x.HierarchyID), Kind: api.IncidentKind(x.Kind),
			FromNodeId: optID(x.From), ToNodeId: optID(x.To), Reason: x.Reason, State: api.IncidentState(x.State), DetectedAt: x.DetectedAt,
			FencedAt: x.FencedAt, DecidedAt: x.DecidedAt, StoppedAt: x.StoppedAt, StartedAt: x.StartedAt, FirstDeepCheckAt: x.FirstDeepCheckAt, RecoveryMs: x.RecoveryMS}
	}
	return out, nil
}
