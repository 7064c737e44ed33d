package backstop

import (
	"encoding/json"
	"time"
)

// PlacementState is where a hierarchy stands on its node.
type PlacementState string

// Placement states of a hierarchy.
const (
	PlacementInService    PlacementState = "in_service"
	PlacementOutOfService PlacementState = "out_of_service"
	PlacementStarting     PlacementState = "starting"
	PlacementStopping     PlacementState = "stopping"
	PlacementFailed       PlacementState = "failed"
)

// Placement says which node a hierarchy is in service on. Epoch increases
// at every placement change and fences stale commands.
type Placement struct {
	NodeID    string
	Epoch     int64
	State     PlacementState
	Detail    string
	UpdatedAt time.Time
}

// Active reports whether the hierarchy is, or may be, running on its node.
func (p Placement) Active() bool {
	return p.NodeID != "" && (p.State == PlacementInService || p.State == PlacementStarting || p.State == PlacementStopping)
}

// Operation kinds and states.
const (
	OperationInService    = "in_service"
	OperationOutOfService = "out_of_service"

	OperationPending   = "pending"
	OperationRunning   = "running"
	OperationSucceeded = "succeeded"
	OperationFailed    = "failed"
)

// StepResult is the outcome of one step of a command on an agent.
type StepResult struct {
	Resource   string `json:"resource"`
	Action     string `json:"action"`
	OK         bool   `json:"ok"`
	Detail     string `json:"detail,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// Operation is a placement action requested by an operator.
type Operation struct {
	ID          string
	ClusterID   string
	HierarchyID string
	NodeID      string
	Kind        string
	State       string
	Epoch       int64
	CommandID   string
	Detail      string
	Steps       []StepResult
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// NodeStatus is what the failover engine reads about a node.
type NodeStatus struct {
	ID          string
	Name        string
	State       NodeState
	Maintenance bool
	// PathsAlive: some up peer whose lease still runs (a fresh report)
	// reports a live communication path to it.
	PathsAlive bool
	StateSince time.Time
	// AwaitingFence: the node is down, has a fence device, and no fence
	// was confirmed since it went down. Nothing moves off it.
	AwaitingFence bool
}

// HierarchyStatus is what the failover engine reads about a hierarchy.
type HierarchyStatus struct {
	Hierarchy
	// FailedOn maps the nodes it is marked failed on to the reason.
	FailedOn map[string]string
	// LastDecision is the key of the last decision acted on, so the
	// engine never repeats one.
	LastDecision string
	// MoveTo is the destination of a two-step move in progress.
	MoveTo string
}

// ClusterStatus is one cluster as the failover engine sees it.
type ClusterStatus struct {
	Cluster     Cluster
	Nodes       []NodeStatus
	Hierarchies []HierarchyStatus
}

// DecisionRecord is a decision as stored, with its inputs.
type DecisionRecord struct {
	ClusterID   string
	HierarchyID string
	Kind        string
	From        string
	To          string
	Reason      string
	Candidates  json.RawMessage
	Inputs      json.RawMessage
	Term        int64
	At          time.Time
	// Key identifies the decision so it is acted on once.
	Key string
}

// Incident is a failover, switchover or switchback with its timeline.
type Incident struct {
	ID          string
	ClusterID   string
	HierarchyID string
	Kind        string
	From        string
	To          string
	Reason      string
	State       string
	DetectedAt  time.Time
	// FencedAt is when the old node, down, was confirmed off by its
	// fence device.
	FencedAt         *time.Time
	DecidedAt        *time.Time
	StoppedAt        *time.Time
	StartedAt        *time.Time
	FirstDeepCheckAt *time.Time
	RecoveryMS       *int64
}

// FailedMark is a node a hierarchy failed on.
type FailedMark struct {
	NodeID string
	Reason string
	At     time.Time
}

// NodeTransition is a node state change made by the failure detector.
type NodeTransition struct {
	ClusterID, NodeID, Node string
	From, To                NodeState
}

// LeaseOutlook is what the failover engine reads about leases at the
// start of a pass: whether the failure detector has work, and when it
// will next.
type LeaseOutlook struct {
	// Lapsed: some up or unreachable node's lease has run out (it is to
	// be judged, or judged again).
	Lapsed bool
	// Running: some up or unreachable node holds a lease still running;
	// Next is how long until the first of them runs out, by the
	// database clock.
	Running bool
	Next    time.Duration
}

// Move kinds for StartMove and incidents.
const (
	MoveFailover   = "failover"
	MoveSwitchover = "switchover"
	MoveSwitchback = "switchback"
)

// MoveRequest is a placement change the engine or an operator starts.
type MoveRequest struct {
	Kind        string // MoveFailover, MoveSwitchover, MoveSwitchback
	ClusterID   string
	HierarchyID string
	ExpectEpoch int64
	To          string
	// DetectedAt starts the incident's timeline (failure detected, or
	// the request made).
	DetectedAt time.Time
	Decision   DecisionRecord
	// Operation, for switchovers an operator asked for.
	WithOperation bool
}

// CommandEffect is what a command result changed, for metrics.
type CommandEffect struct {
	// Recovered is set when the result ended an incident: how long from
	// detection to in service.
	Recovered  *time.Duration
	IncidentID string
}
