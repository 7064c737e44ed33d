package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/backstop-ha/backstop"
)

// Store is what the engine reads and writes. Every write takes the
// leader term and fails with backstop.ErrStaleTerm once another replica
// leads, so a deposed leader cannot act.
type Store interface {
	JudgeNodes(ctx context.Context, term int64) ([]backstop.NodeTransition, error)
	LeaseOutlook(ctx context.Context) (backstop.LeaseOutlook, error)
	// ClusterStatuses reads clusters ids (nil: every cluster) that have
	// hierarchies.
	ClusterStatuses(ctx context.Context, ids []string) ([]backstop.ClusterStatus, error)
	StartMove(ctx context.Context, term int64, m backstop.MoveRequest, sign backstop.Signer) (backstop.Incident, *backstop.Operation, error)
	AdvanceMoves(ctx context.Context, term int64, sign backstop.Signer) (int, error)
	FailHierarchy(ctx context.Context, term int64, clusterID, hierarchyID string, expectEpoch int64, d backstop.DecisionRecord) error
	NoteDecision(ctx context.Context, term int64, d backstop.DecisionRecord, eventType, message string) error
	FenceJobs(ctx context.Context) ([]backstop.FenceJob, error)
	RecordFence(ctx context.Context, term int64, r backstop.FenceResult) error
}

// Engine is the leader's loop: detect failures, decide, act.
type Engine struct {
	Store Store
	Sign  backstop.Signer
	Log   *slog.Logger
	// Interval is the longest pause between passes while anything is
	// under way (default 50 ms): a move, a hierarchy starting or stopping,
	// a node awaiting its fence, a decision just taken.
	Interval time.Duration
	// Idle is the longest pause while everything is settled (default
	// 250 ms). Either way the engine wakes right after the next lease
	// expires (that is how failures are detected, so an idle engine
	// detects as fast as a busy one) and when poked (Poke: a replica
	// heard an event, which every placement result, node transition and
	// operator move writes). An idle pass reads no cluster unless one
	// changed (see FullEvery, which bounds how late changes that write no
	// event are noticed): reading every cluster's state twenty times a
	// second while nothing happens was most of PostgreSQL's work with a
	// thousand agents.
	Idle time.Duration
	// FullEvery bounds how long a cluster may go without being read
	// (default 1 s). A pass reads only the clusters that changed: those
	// named by PokeCluster (an event heard: every placement result,
	// node transition, path change and move writes one), those whose
	// nodes it judged, and those with something under way; every
	// FullEvery, and after Poke or an error, it reads them all. Changes
	// that write no event and that no operator made through this
	// replica's API are thus noticed within FullEvery.
	FullEvery time.Duration
	// Observe, if set, is told about each decision acted on.
	Observe func(d Decision)
	// Fencer fences down nodes through their fence devices before their
	// hierarchies move. Without one, a node with a fence device that
	// goes down keeps its hierarchies until its device is removed.
	Fencer Fencer
	// OnFence, if set, is told about each fence attempt (metrics).
	OnFence func(r backstop.FenceResult)

	fences   fences
	wakeOnce sync.Once
	wakeCh   chan struct{}
	// busy: the last pass found something under way; actedOn counts the
	// decisions it acted on; next is when the next running lease runs
	// out (zero: none runs); unsettled are the clusters with something
	// under way at their last read; lastFull is when every cluster was
	// last read (only the stepping goroutine touches these).
	busy      bool
	actedOn   int
	next      time.Time
	unsettled map[string]bool
	lastFull  time.Time

	// mu guards dirty and all: what PokeCluster and Poke asked for.
	mu    sync.Mutex
	dirty map[string]bool
	all   bool
}

// settled tells whether nothing is under way in a cluster: no move, no
// hierarchy starting, stopping or failed, no node awaiting its fence.
func settled(st backstop.ClusterStatus) bool {
	for _, n := range st.Nodes {
		if n.AwaitingFence {
			return false
		}
	}
	for _, h := range st.Hierarchies {
		if h.MoveTo != "" || (h.Placement.State != backstop.PlacementInService && h.Placement.State != backstop.PlacementOutOfService) {
			return false
		}
	}
	return true
}

// Poke makes the engine run its next pass now and read every cluster in
// it (if it is running; a poke while a pass runs makes one more pass
// right after it). For changes of unknown extent: an operator's change,
// an event listener that restarted (events may have been missed).
func (e *Engine) Poke() {
	e.mu.Lock()
	e.all = true
	e.mu.Unlock()
	e.wakeUp()
}

// PokeCluster makes the engine run its next pass now and read cluster
// id in it: an event of that cluster was heard. "" is Poke.
func (e *Engine) PokeCluster(id string) {
	if id == "" {
		e.Poke()
		return
	}
	e.mu.Lock()
	if e.dirty == nil {
		e.dirty = map[string]bool{}
	}
	e.dirty[id] = true
	e.mu.Unlock()
	e.wakeUp()
}

// takeDirty returns the clusters asked for since the last call and
// whether every cluster was.
func (e *Engine) takeDirty() (map[string]bool, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, all := e.dirty, e.all
	e.dirty, e.all = nil, false
	return d, all
}

// minRecheck is the shortest pause between two passes.
const minRecheck = 5 * time.Millisecond

// Run steps until ctx ends (leadership lost or shutdown).
func (e *Engine) Run(ctx context.Context, term int64) {
	iv := e.Interval
	if iv <= 0 {
		iv = 50 * time.Millisecond
	}
	idle := e.Idle
	if idle <= 0 {
		idle = 250 * time.Millisecond
	}
	idle = max(idle, iv)
	timer := time.NewTimer(iv)
	defer timer.Stop()
	e.mu.Lock()
	e.all = true // a new term reads everything first
	e.mu.Unlock()
	for {
		start := time.Now()
		if err := e.Step(ctx, term); err != nil && ctx.Err() == nil {
			if errors.Is(err, backstop.ErrStaleTerm) {
				e.Log.ErrorContext(ctx, "engine: another replica leads now; stopping", "term", term)
				return
			}
			e.Log.WarnContext(ctx, "engine step", "err", err)
		}
		wait := idle
		if e.busy {
			wait = iv
		}
		if !e.next.IsZero() {
			// Wake just after the next lease runs out, as read at the
			// start of the pass (renewals since only push it later; a
			// node that got a lease since came up, which writes an
			// event, which pokes). LeaseOutlook leaves out leases
			// already lapsed (a node left unjudged for want of
			// evidence stays lapsed), and minRecheck bounds the rate
			// anyway, so the engine never spins.
			wait = min(wait, max(time.Until(e.next)+2*time.Millisecond, minRecheck))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.wake():
			// Poked: pass now, but passes still start at most once per
			// Interval, as when the engine only ticked; a storm of
			// events (many nodes flapping) must not make it read every
			// cluster back to back.
			if d := time.Until(start.Add(iv)); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
		}
	}
}

// Step runs one pass: judge leases, advance two-step moves, decide and act
// on the clusters that changed (see FullEvery).
func (e *Engine) Step(ctx context.Context, term int64) (err error) {
	// Busy until this pass finds everything settled; an error keeps it
	// busy (the pass is retried at the short interval) and makes the next
	// pass read every cluster (what this one was asked to read is not
	// lost).
	e.busy = true
	dirty, all := e.takeDirty()
	defer func() {
		if err != nil {
			e.mu.Lock()
			e.all = true
			e.mu.Unlock()
		}
	}()
	asked := time.Now()
	lo, err := e.Store.LeaseOutlook(ctx)
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	e.next = time.Time{}
	if lo.Running {
		e.next = asked.Add(lo.Next)
	}
	var trs []backstop.NodeTransition
	if lo.Lapsed {
		if trs, err = e.Store.JudgeNodes(ctx, term); err != nil {
			return fmt.Errorf("judge nodes: %w", err)
		}
	}
	for _, tr := range trs {
		e.Log.WarnContext(ctx, "node state changed", "node", tr.Node, "node_id", tr.NodeID, "from", tr.From, "to", tr.To)
	}
	advanced, err := e.Store.AdvanceMoves(ctx, term, e.Sign)
	if err != nil {
		return fmt.Errorf("advance moves: %w", err)
	}
	full := all || e.lastFull.IsZero() || time.Since(e.lastFull) >= e.fullEvery()
	var ids []string // nil: every cluster
	if !full {
		if dirty == nil {
			dirty = map[string]bool{}
		}
		for _, tr := range trs {
			dirty[tr.ClusterID] = true
		}
		for id := range e.unsettled {
			dirty[id] = true
		}
		ids = make([]string, 0, len(dirty))
		for id := range dirty {
			ids = append(ids, id)
		}
	}
	var sts []backstop.ClusterStatus
	if full || len(ids) > 0 {
		read := time.Now()
		if sts, err = e.Store.ClusterStatuses(ctx, ids); err != nil {
			return fmt.Errorf("read state: %w", err)
		}
		if full {
			e.unsettled, e.lastFull = map[string]bool{}, read
		}
		for _, id := range ids { // gone, or no hierarchy left
			delete(e.unsettled, id)
		}
		for _, st := range sts {
			if settled(st) {
				delete(e.unsettled, st.Cluster.ID)
			} else {
				e.unsettled[st.Cluster.ID] = true
			}
		}
	}
	e.actedOn = 0
	defer func() {
		e.busy = len(trs) > 0 || advanced > 0 || e.actedOn > 0 || len(e.unsettled) > 0
	}()
	var errs []error
	if err := e.startFences(ctx, term, sts); err != nil {
		errs = append(errs, fmt.Errorf("start fences: %w", err))
	}
	for _, st := range sts {
		if err := e.act(ctx, term, st); err != nil {
			if errors.Is(err, backstop.ErrStaleTerm) {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) fullEvery() time.Duration {
	if e.FullEvery > 0 {
		return e.FullEvery
	}
	return time.Second
}

// act decides for one cluster and carries the decisions out.
func (e *Engine) act(ctx context.Context, term int64, st backstop.ClusterStatus) error {
	snap := SnapshotOf(st)
	byID := map[string]backstop.HierarchyStatus{}
	for _, h := range st.Hierarchies {
		byID[h.ID] = h
	}
	var errs []error
	for _, d := range Decide(snap) {
		h := byID[d.HierarchyID]
		if h.MoveTo != "" {
			continue // a move is under way
		}
		key := fmt.Sprintf("%s|%s|%d", d.Kind, d.To, h.Placement.Epoch)
		if key == h.LastDecision {
			continue // acted on already
		}
		rec := Record(st, d, key)
		var err error
		switch d.Kind {
		case KindFailover, KindSwitchback:
			kind, detected := backstop.MoveFailover, time.Now()
			if d.Kind == KindSwitchback {
				kind = backstop.MoveSwitchback
			} else if n, ok := snap.Nodes[h.Placement.NodeID]; ok && n.State == backstop.NodeDown {
				detected = nodeSince(st, h.Placement.NodeID)
			} else if !h.Placement.UpdatedAt.IsZero() {
				detected = h.Placement.UpdatedAt
			}
			_, _, err = e.Store.StartMove(ctx, term, backstop.MoveRequest{Kind: kind, ClusterID: st.Cluster.ID, HierarchyID: h.ID,
				ExpectEpoch: h.Placement.Epoch, To: d.To, DetectedAt: detected, Decision: rec}, e.Sign)
		case KindFail:
			err = e.Store.FailHierarchy(ctx, term, st.Cluster.ID, h.ID, h.Placement.Epoch, rec)
		case KindSwitchbackPossible:
			err = e.Store.NoteDecision(ctx, term, rec, "switchback.possible", fmt.Sprintf("switchback of %s possible: %s", h.Name, d.Reason))
		}
		if err != nil {
			if errors.Is(err, backstop.ErrStaleTerm) {
				return err
			}
			errs = append(errs, fmt.Errorf("%s %s: %w", d.Kind, h.Name, err))
			continue
		}
		e.Log.InfoContext(ctx, "decision", "kind", d.Kind, "hierarchy", h.Name, "from", d.From, "to", d.To, "reason", d.Reason)
		e.actedOn++
		if e.Observe != nil {
			e.Observe(d)
		}
	}
	return errors.Join(errs...)
}

func nodeSince(st backstop.ClusterStatus, id string) time.Time {
	for _, n := range st.Nodes {
		if n.ID == id {
			return n.StateSince
		}
	}
	return time.Now()
}

// SnapshotOf turns what the store read into a decision snapshot. A
// hierarchy moving to a node counts as placed there.
func SnapshotOf(st backstop.ClusterStatus) Snapshot {
	s := Snapshot{Nodes: make(map[string]NodeView, len(st.Nodes))}
	for _, n := range st.Nodes {
		s.Nodes[n.ID] = NodeView{ID: n.ID, Name: n.Name, State: n.State, Maintenance: n.Maintenance, PathsAlive: n.PathsAlive, AwaitingFence: n.AwaitingFence}
	}
	for _, h := range st.Hierarchies {
		v := HierarchyView{ID: h.ID, Name: h.Name, Group: h.ExclusivityGroup, Switchback: h.Switchback,
			Priorities: h.Priorities, Placement: h.Placement, FailedOn: map[string]bool{}}
		for n := range h.FailedOn {
			v.FailedOn[n] = true
		}
		if h.MoveTo != "" {
			v.Placement.NodeID, v.Placement.State = h.MoveTo, backstop.PlacementStarting
		}
		s.Hierarchies = append(s.Hierarchies, v)
	}
	return s
}

// Record turns a decision into its stored form, with the inputs it was
// made from: the states of the hierarchy's nodes and its placement.
func Record(st backstop.ClusterStatus, d Decision, key string) backstop.DecisionRecord {
	type nodeIn struct {
		Name        string             `json:"name"`
		State       backstop.NodeState `json:"state"`
		Maintenance bool               `json:"maintenance,omitempty"`
		PathsAlive  bool               `json:"paths_alive"`
		// AwaitingFence never shows in a decision that moved something;
		// it is there for explain and simulate.
		AwaitingFence bool `json:"awaiting_fence,omitempty"`
	}
	in := struct {
		Nodes     map[string]nodeIn `json:"nodes"`
		Placement map[string]any    `json:"placement"`
		FailedOn  map[string]string `json:"failed_on,omitempty"`
	}{Nodes: map[string]nodeIn{}}
	for _, h := range st.Hierarchies {
		if h.ID != d.HierarchyID {
			continue
		}
		in.Placement = map[string]any{"node_id": h.Placement.NodeID, "state": h.Placement.State, "epoch": h.Placement.Epoch, "detail": h.Placement.Detail}
		in.FailedOn = h.FailedOn
		for _, p := range h.Priorities {
			for _, n := range st.Nodes {
				if n.ID == p.NodeID {
					in.Nodes[n.ID] = nodeIn{Name: n.Name, State: n.State, Maintenance: n.Maintenance, PathsAlive: n.PathsAlive, AwaitingFence: n.AwaitingFence}
				}
			}
		}
	}
	inputs, _ := json.Marshal(in)
	cands, _ := json.Marshal(d.Candidates)
	if d.Candidates == nil {
		cands = []byte("[]")
	}
	return backstop.DecisionRecord{ClusterID: st.Cluster.ID, HierarchyID: d.HierarchyID, Kind: d.Kind, From: d.From, To: d.To,
		Reason: d.Reason, Candidates: cands, Inputs: inputs, Key: key}
}
