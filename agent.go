package backstop

import (
	"context"
	"encoding/json"
	"time"
)

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
	// Report is the agent's last heartbeat report as it sent it (paths
	// with RTT and loss, resource health); nil before the first one.
	Report json.RawMessage
}

// AgentIdentity is an authenticated agent.
type AgentIdentity struct {
	NodeID    string
	ClusterID string
	NodeName  string
	// PublicKey is the Ed25519 key the agent enrolled with; its TLS
	// client certificate must carry it.
	PublicKey []byte
}

// CommandOutcome is what an agent reports about a command.
type CommandOutcome struct {
	Status string // succeeded, failed or rejected
	Reason string // a rejection's code, or FailedFenced/FailedIsolated
	Detail string
	Steps  []StepResult
}

// Reason codes of a failed command that did not fail because of the
// hierarchy: the node could not hold anything at that moment. A bring-up
// that failed so leaves no failed mark on the node.
const (
	// FailedFenced: the node fenced itself (its lease lapsed) while the
	// command ran, and everything the command had started was fenced.
	FailedFenced = "fenced"
	// FailedIsolated: the node refused to start anything because its
	// lease had expired and it saw no majority of the cluster.
	FailedIsolated = "isolated"
)

// NodeGaveUp reports whether a failed command's reason says the node, not
// the hierarchy, was the cause (FailedFenced or FailedIsolated).
func NodeGaveUp(reason string) bool { return reason == FailedFenced || reason == FailedIsolated }

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
	// Instance names the agent process (the heartbeat's instance; ""
	// when not given): a hold is ended only by another process.
	Instance string
	Raw      json.RawMessage
	// Digest identifies the part of the report anything decides from
	// (hierarchy states and epochs, check results, restarts, path
	// states), not its telemetry (round-trip times, losses, check
	// times). Nil: unknown, the report is always stored.
	Digest []byte
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

// LeaseRenewal is a heartbeat that says nothing new (see
// store.RenewLease): the digest of its report, and, when the report is
// due to be stored again for its telemetry, the report and the digest the
// stored one has if nothing but telemetry changed since.
type LeaseRenewal struct {
	Digest []byte
	// Report, when not nil, replaces the stored report if the stored
	// digest is Prev (then the digest becomes Digest).
	Report []byte
	Prev   []byte
}

// HeartbeatAck is the server's answer to a heartbeat.
type HeartbeatAck struct {
	// LeaseTTL is the lease the agent may count on from its send time:
	// the cluster's TTL, or the restart hold when one longer was granted.
	LeaseTTL      time.Duration
	Term          int64
	ConfigVersion int64
	// DeclaredDown: the node had been declared down before this heartbeat
	// arrived; LeaseTTL is 0 and the agent must fence what it runs.
	DeclaredDown bool
}
