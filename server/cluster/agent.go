package cluster

import (
	"context"
	"encoding/json"
	"time"
)

// Placement states of a hierarchy.
const (
	PlacementInService    = "in_service"
	PlacementOutOfService = "out_of_service"
	PlacementStarting     = "starting"
	PlacementStopping     = "stopping"
	PlacementFailed       = "failed"
)

// Placement says which node a hierarchy is in service on. Epoch increases
// at every placement change and fences stale commands.
type Placement struct {
	NodeID    string
	Epoch     int64
	State     string
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
	HierarchyID string `json:"hierarchy_id"`
	Epoch       int64  `json:"epoch"`
	State       string `json:"state"`
	Detail      string `json:"detail,omitempty"`
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
	Raw           json.RawMessage
}

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
	LeaseTTL      time.Duration
	Term          int64
	ConfigVersion int64
}
