package failover

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/backstop-ha/backstop"
)

// NodeView is what a decision knows about a node.
type NodeView struct {
	ID          string
	Name        string
	State       backstop.NodeState
	Maintenance bool
	// PathsAlive is true when at least one peer with a fresh report (up,
	// lease running) sees the node over a communication path (automatic
	// switchback waits for it).
	PathsAlive bool
	// AwaitingFence is true for a down node with a fence device whose
	// fence has not been confirmed since it went down: nothing moves off
	// it (it may still run its hierarchies) until the fence is confirmed.
	AwaitingFence bool
}

// HierarchyView is what a decision knows about a hierarchy.
type HierarchyView struct {
	ID         string
	Name       string
	Group      string // exclusivity group, "" for none
	Switchback string
	Priorities []backstop.Priority // lowest number first
	Placement  backstop.Placement
	// FailedOn marks nodes this hierarchy failed on; they are not
	// candidates until an operator clears the mark.
	FailedOn map[string]bool
}

// Snapshot is everything a decision reads.
type Snapshot struct {
	Nodes       map[string]NodeView
	Hierarchies []HierarchyView
}

// Kinds of decision.
const (
	// KindFailover moves a hierarchy off a failed node (or away from its
	// own failure) to the best candidate.
	KindFailover = "failover"
	// KindSwitchback moves a hierarchy back to a higher-priority node
	// (automatic switchback).
	KindSwitchback = "switchback"
	// KindSwitchbackPossible records that a higher-priority node is back
	// while the policy is intelligent: nothing moves.
	KindSwitchbackPossible = "switchback_possible"
	// KindFail marks a hierarchy failed: no candidate can take it.
	KindFail = "fail"
)

// Candidate is one node considered for a hierarchy, with the reason it was
// rejected ("" for the chosen one or an acceptable one not chosen).
type Candidate struct {
	NodeID   string `json:"node_id"`
	Node     string `json:"node"`
	Priority int    `json:"priority"`
	Rejected string `json:"rejected,omitempty"`
}

// Decision is what should happen to one hierarchy, and why.
type Decision struct {
	HierarchyID string      `json:"hierarchy_id"`
	Hierarchy   string      `json:"hierarchy"`
	Kind        string      `json:"kind"`
	From        string      `json:"from,omitempty"` // node id
	To          string      `json:"to,omitempty"`   // node id
	Reason      string      `json:"reason"`
	Candidates  []Candidate `json:"candidates"`
}

// active reports whether a placement holds (or may hold) the hierarchy on
// its node.
func active(p backstop.Placement) bool {
	return p.NodeID != "" && (p.State == backstop.PlacementInService || p.State == backstop.PlacementStarting || p.State == backstop.PlacementStopping)
}

// occupancy tracks which exclusivity groups are active on which node.
type occupancy map[string]map[string]string // node -> group -> hierarchy name

func (o occupancy) add(node, group, name string) {
	if group == "" || node == "" {
		return
	}
	if o[node] == nil {
		o[node] = map[string]string{}
	}
	o[node][group] = name
}

// Decide returns the decisions a snapshot calls for, in a deterministic
// order. Hierarchies are considered in the order given (callers pass them
// by id, so ties between equally urgent hierarchies always resolve the same
// way); a node taken by one decision's exclusivity group is unavailable to
// the next.
func Decide(s Snapshot) []Decision {
	occ := occupancy{}
	for _, h := range s.Hierarchies {
		if active(h.Placement) && !nodeDown(s, h.Placement.NodeID) {
			occ.add(h.Placement.NodeID, h.Group, h.Name)
		}
	}
	var out []Decision
	for _, h := range s.Hierarchies {
		if d, ok := decideOne(s, h, occ); ok {
			out = append(out, d)
			if d.Kind == KindFailover || d.Kind == KindSwitchback {
				occ.add(d.To, h.Group, h.Name)
			}
		}
	}
	return out
}

func nodeDown(s Snapshot, id string) bool {
	n, ok := s.Nodes[id]
	return !ok || n.State == backstop.NodeDown
}

// decideOne decides for one hierarchy, if anything is to be decided.
func decideOne(s Snapshot, h HierarchyView, occ occupancy) (Decision, bool) {
	p := h.Placement
	d := Decision{HierarchyID: h.ID, Hierarchy: h.Name, From: p.NodeID}
	switch {
	case p.NodeID == "" && p.State == backstop.PlacementFailed:
		// Failed earlier for want of a candidate: take the first one that
		// appears, and say nothing new while there is none.
		d.Reason = "hierarchy is failed with no node; a candidate is available again"
		d.Candidates = candidates(s, h, occ, "")
		for _, c := range d.Candidates {
			if c.Rejected == "" {
				d.Kind, d.To = KindFailover, c.NodeID
				return d, true
			}
		}
		return d, false
	case p.NodeID == "":
		return d, false // never placed: operators bring hierarchies in service
	case s.Nodes[p.NodeID].AwaitingFence:
		return d, false // down, but not fenced yet: it may still run the hierarchy
	case active(p) && nodeDown(s, p.NodeID):
		d.Reason = fmt.Sprintf("node %s is down", nodeName(s, p.NodeID))
	case p.State == backstop.PlacementFailed && !h.FailedOn[p.NodeID] && nodeDown(s, p.NodeID):
		d.Reason = fmt.Sprintf("hierarchy failed on node %s, which is down", nodeName(s, p.NodeID))
	case p.State == backstop.PlacementFailed && h.FailedOn[p.NodeID]:
		d.Reason = fmt.Sprintf("hierarchy failed on node %s: %s", nodeName(s, p.NodeID), p.Detail)
	case p.State == backstop.PlacementInService:
		return switchback(s, h, occ)
	default:
		return d, false // starting, stopping, out of service, or failed with no node to leave: nothing to do
	}
	d.Candidates = candidates(s, h, occ, p.NodeID)
	for _, c := range d.Candidates {
		if c.Rejected == "" {
			d.Kind, d.To = KindFailover, c.NodeID
			return d, true
		}
	}
	d.Kind = KindFail
	d.Reason += "; no node can take it over: " + rejectionList(d.Candidates)
	return d, true
}

// candidates lists every node with a priority for h, best first, each
// with the reason it cannot take h ("" if it can). exclude is the node h
// is leaving.
func candidates(s Snapshot, h HierarchyView, occ occupancy, exclude string) []Candidate {
	out := make([]Candidate, 0, len(h.Priorities))
	for _, pr := range h.Priorities {
		c := Candidate{NodeID: pr.NodeID, Node: nodeName(s, pr.NodeID), Priority: pr.Priority}
		n, known := s.Nodes[pr.NodeID]
		switch {
		case pr.NodeID == exclude:
			c.Rejected = "the node it is leaving"
		case !known:
			c.Rejected = "unknown node"
		case n.Maintenance || n.State == backstop.NodeMaintenance:
			c.Rejected = "in maintenance"
		case n.State != backstop.NodeUp:
			c.Rejected = "node is " + string(n.State)
		case h.FailedOn[pr.NodeID]:
			c.Rejected = "the hierarchy failed on this node (clear the mark to allow it again)"
		case h.Group != "" && occ[pr.NodeID][h.Group] != "" && occ[pr.NodeID][h.Group] != h.Name:
			c.Rejected = fmt.Sprintf("exclusivity group %q already runs %q on this node", h.Group, occ[pr.NodeID][h.Group])
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b Candidate) int { return cmp.Compare(a.Priority, b.Priority) })
	return out
}

// switchback decides for a hierarchy in service whether a higher-priority
// node is available again.
func switchback(s Snapshot, h HierarchyView, occ occupancy) (Decision, bool) {
	cur := h.Placement.NodeID
	curPrio := 0
	for _, pr := range h.Priorities {
		if pr.NodeID == cur {
			curPrio = pr.Priority
		}
	}
	if curPrio == 0 || s.Nodes[cur].State != backstop.NodeUp {
		// Not on an up node (unreachable, say): moving it could run it twice.
		return Decision{}, false
	}
	var best *Candidate
	cs := candidates(s, h, occ, cur)
	for i, c := range cs {
		if c.Priority >= curPrio {
			break // never towards a lower-priority node
		}
		if c.Rejected == "" && s.Nodes[c.NodeID].PathsAlive {
			best = &cs[i]
			break
		}
	}
	if best == nil {
		return Decision{}, false
	}
	d := Decision{HierarchyID: h.ID, Hierarchy: h.Name, From: cur, To: best.NodeID, Candidates: cs,
		Reason: fmt.Sprintf("node %s (priority %d) is up again; the hierarchy runs on %s (priority %d)", best.Node, best.Priority, nodeName(s, cur), curPrio)}
	if h.Switchback == backstop.SwitchbackAutomatic {
		d.Kind = KindSwitchback
	} else {
		d.Kind = KindSwitchbackPossible
	}
	return d, true
}

// rejectionList says why each candidate was turned down.
func rejectionList(cs []Candidate) string {
	if len(cs) == 0 {
		return "it has no priority on any node"
	}
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s (priority %d): %s", c.Node, c.Priority, c.Rejected))
	}
	return strings.Join(parts, "; ")
}

func nodeName(s Snapshot, id string) string {
	if n, ok := s.Nodes[id]; ok && n.Name != "" {
		return n.Name
	}
	return id
}

// Next returns where h would go if its current node failed now: the
// candidates in order with their rejections, and the chosen node ("" for
// none). It answers "where would it go next" for explain.
func Next(s Snapshot, hierarchyID string) (to string, cs []Candidate) {
	occ := occupancy{}
	var h *HierarchyView
	for i := range s.Hierarchies {
		x := &s.Hierarchies[i]
		if x.ID == hierarchyID {
			h = x
			continue
		}
		if active(x.Placement) && !nodeDown(s, x.Placement.NodeID) {
			occ.add(x.Placement.NodeID, x.Group, x.Name)
		}
	}
	if h == nil {
		return "", nil
	}
	cs = candidates(s, *h, occ, h.Placement.NodeID)
	for _, c := range cs {
		if c.Rejected == "" {
			return c.NodeID, cs
		}
	}
	return "", cs
}
