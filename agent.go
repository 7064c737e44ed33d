package backstop

import (
	"context"
	"encoding/json"
	"fmt"
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

// HostInterface is a network interface an agent reported.
type HostInterface struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
}

// HostFacts is what an agent reported about its host at enrollment.
type HostFacts struct {
	Hostname     string          `json:"hostname"`
	OS           string          `json:"os"`
	Kernel       string          `json:"kernel,omitempty"`
	Arch         string          `json:"arch"`
	AgentVersion string          `json:"agent_version"`
	Interfaces   []HostInterface `json:"interfaces,omitempty"`
}

// NodeAgent is a node's enrolled agent.
type NodeAgent struct {
	EnrolledAt      time.Time
	LastHeartbeatAt *time.Time
	Facts           HostFacts
}

// AgentIdentity is an authenticated agent.
type AgentIdentity struct {
	NodeID    string
	ClusterID string
	NodeName  string
}

// SigningKey is a command-signing public key of the control plane.
type SigningKey struct {
	KeyID       string
	PublicKey   []byte
	Active      bool
	EndorsedBy  string
	Endorsement []byte
	CreatedAt   time.Time
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

// Command statuses.
const (
	CommandQueued    = "queued"
	CommandDelivered = "delivered"
	CommandSucceeded = "succeeded"
	CommandFailed    = "failed"
	CommandRejected  = "rejected"
	CommandExpired   = "expired"
)

// CommandInfo is a stored signed command and what became of it.
type CommandInfo struct {
	ID              string
	ClusterID       string
	NodeID          string
	HierarchyID     string
	Action          string
	Epoch           int64
	Term            int64
	KeyID           string
	Status          string
	RejectionReason string
	Detail          string
	IssuedAt        time.Time
	ExpiresAt       time.Time
	CompletedAt     *time.Time
}

// SignedCommand is a command ready for delivery: its exact signed bytes.
type SignedCommand struct {
	ID        string
	Payload   []byte
	KeyID     string
	Signature []byte
}

// CommandOutcome is what an agent reports about a command.
type CommandOutcome struct {
	Status string // succeeded, failed or rejected
	Reason string
	Detail string
	Steps  []StepResult
}

// HierarchyReport is an agent's view of one hierarchy.
type HierarchyReport struct {
	HierarchyID string         `json:"hierarchy_id"`
	Epoch       int64          `json:"epoch"`
	State       PlacementState `json:"state"`
	Detail      string         `json:"detail,omitempty"`
}

// FenceReport is a self-fencing an agent did.
type FenceReport struct {
	At          time.Time `json:"at"`
	Reason      string    `json:"reason"`
	Hierarchies []string  `json:"hierarchies"`
}

// AgentReport is the content of a heartbeat. Raw keeps the whole report
// (resource health, paths) for operators and the failover engine.
type AgentReport struct {
	ConfigVersion int64
	Hierarchies   []HierarchyReport
	Fences        []FenceReport
	// RestartHold (the heartbeat's restart_hold_ms, 0 for none) says the
	// agent is restarting: when longer than the lease TTL, the lease is
	// kept for this long (plus the server grace) from receipt, so the
	// node's hierarchies stay in place while the next agent process
	// starts. The node's fence guard keeps the same deadline.
	RestartHold time.Duration
	Raw         json.RawMessage
}

// MaxRestartHold bounds AgentReport.RestartHold (the contract's maximum
// of restart_hold_ms).
const MaxRestartHold = 120 * time.Second

// AgentConfig is the desired configuration of one node.
type AgentConfig struct {
	Version     int64
	Cluster     Cluster
	NodeID      string
	Hierarchies []Hierarchy
	Peers       []Node
	Paths       []Path
	PathKey     []byte
	SigningKeys []SigningKey
}

// SealedKey is a signing key with its private half sealed under the
// operator's secret key.
type SealedKey struct {
	SigningKey
	PrivateSealed []byte
}

// CommandSpec is what a command says, before it is signed.
type CommandSpec struct {
	ID          string
	ClusterID   string
	NodeID      string
	HierarchyID string
	Hierarchy   string
	Epoch       int64
	Term        int64
	Action      string
	// Resources are in bring-up order.
	Resources []Resource
}

// Signer turns a command spec into signed bytes, returning the issue and
// expiry times it signed.
type Signer func(CommandSpec) (SignedCommand, time.Time, time.Time, error)

type agentKey struct{}

// WithAgent returns a context carrying an authenticated agent.
func WithAgent(ctx context.Context, a AgentIdentity) context.Context {
	return context.WithValue(ctx, agentKey{}, a)
}

// AgentFrom returns the agent carried by ctx; ok is false for requests
// not made by an agent.
func AgentFrom(ctx context.Context) (AgentIdentity, bool) {
	a, ok := ctx.Value(agentKey{}).(AgentIdentity)
	return a, ok
}

// HeartbeatAck is the server's answer to a heartbeat.
type HeartbeatAck struct {
	// LeaseTTL is the lease the agent may count on from its send time:
	// the cluster's TTL, or the restart hold when one longer was granted.
	LeaseTTL      time.Duration
	Term          int64
	ConfigVersion int64
}

// Replica is one backstopd process.
type Replica struct {
	ID         string
	Address    string
	Version    string
	StartedAt  time.Time
	LastSeenAt time.Time
	Leader     bool
}

// ControlPlane is the set of replicas and who leads.
type ControlPlane struct {
	Term        int64
	LeaderID    string
	LeaderSince *time.Time
	Replicas    []Replica
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

// Event is a recorded state change.
type Event struct {
	ClusterID string
	Seq       int64
	ID        string
	Type      string
	Severity  string
	Subject   map[string]string
	Message   string
	Details   map[string]any
	At        time.Time
}

// Event severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// ErrStaleTerm is returned when a leader acts with a term that is no
// longer current: another replica leads now.
var ErrStaleTerm = fmt.Errorf("%w: leadership moved to another replica", ErrConflict)

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
