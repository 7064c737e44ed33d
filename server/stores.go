package server

import (
	"context"
	"time"

	"github.com/backstop-ha/backstop"
)

// What the HTTP layer needs from persistence, by area. Each handler type
// takes only the interfaces it calls (Go's "accept interfaces"); Store
// joins them for Config, and package store's *Store implements it
// (cmd/backstopd asserts so at compile time).
//
// Unless a method says otherwise, its errors are those of package
// backstop: ErrNotFound when an id names nothing, ErrConflict when the
// change collides with the current state, ErrInvalid (often a
// *backstop.ValidationError) when the input is wrong, and
// ErrPreconditionFailed when ifMatch names a version that is no longer
// current (nil ifMatch matches any version). Anything else is an internal
// error.

// Store is everything the HTTP layer needs from persistence.
type Store interface {
	HealthStore
	ConfigStore
	AuthStore
	TokenStore
	IdempotencyStore
	AgentStore
	EngineStore
	EventStore
	TargetStore
	ConfigVersionStore
}

// HealthStore answers readiness and shows the control plane.
type HealthStore interface {
	// Ping returns an error when the database does not answer.
	Ping(ctx context.Context) error
	// SchemaVersion is the database's migration version and whether it
	// is clean; an error when the schema was never migrated.
	SchemaVersion(ctx context.Context) (version uint, clean bool, err error)
	// ControlPlane lists the replicas and the current leader.
	ControlPlane(ctx context.Context) (backstop.ControlPlane, error)
}

// ConfigStore is the configuration: clusters, their nodes, paths,
// hierarchies and fence devices.
type ConfigStore interface {
	ClusterStore
	NodeStore
	PathStore
	HierarchyStore
	FenceDeviceStore
}

// ClusterFinder finds a cluster by id.
type ClusterFinder interface {
	// FindClusterByID returns ErrNotFound if there is no cluster id.
	FindClusterByID(ctx context.Context, id string) (backstop.Cluster, error)
}

// ClusterStore keeps clusters.
type ClusterStore interface {
	ClusterFinder
	// CreateCluster returns ErrConflict if the name is taken.
	CreateCluster(ctx context.Context, c backstop.Cluster) (backstop.Cluster, error)
	ListClusters(ctx context.Context, p backstop.Page) ([]backstop.Cluster, string, error)
	// UpdateCluster applies change to the current cluster in one
	// transaction. Returns ErrNotFound, ErrPreconditionFailed, the error
	// of change, and ErrConflict if the new name is taken.
	UpdateCluster(ctx context.Context, id string, ifMatch *int64, change func(backstop.Cluster) (backstop.Cluster, error)) (backstop.Cluster, error)
	// DeleteCluster deletes a cluster and what it owns. Returns
	// ErrNotFound and ErrPreconditionFailed.
	DeleteCluster(ctx context.Context, id string, ifMatch *int64) error
}

// NodeStore keeps a cluster's nodes.
type NodeStore interface {
	// CreateNode adds a node and its one-time enrollment token, bound to
	// the signing key keyFingerprint. Returns ErrNotFound for an unknown
	// cluster, ErrConflict for a taken name and ErrLimit past the
	// cluster's node limit.
	CreateNode(ctx context.Context, n backstop.Node, keyFingerprint string) (backstop.Node, backstop.Enrollment, error)
	// FindNodeByID returns ErrNotFound if the cluster has no node id.
	FindNodeByID(ctx context.Context, clusterID, id string) (backstop.Node, error)
	// ReissueEnrollment gives a node not enrolled yet a new enrollment
	// token. ErrNotFound, ErrPreconditionFailed, and ErrConflict for an
	// enrolled node.
	ReissueEnrollment(ctx context.Context, clusterID, id string, ifMatch *int64, keyFingerprint string) (backstop.Node, backstop.Enrollment, error)
	ListNodes(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Node, string, error)
	// UpdateNode returns ErrNotFound, ErrPreconditionFailed and
	// ErrConflict for a taken name.
	UpdateNode(ctx context.Context, clusterID, id string, ifMatch *int64, u backstop.NodeUpdate) (backstop.Node, error)
	// DeleteNode returns ErrNotFound, ErrPreconditionFailed and
	// ErrConflict while a hierarchy names the node.
	DeleteNode(ctx context.Context, clusterID, id string, ifMatch *int64) error
}

// PathStore keeps the paths between a cluster's nodes.
type PathStore interface {
	// CreatePath creates both directions of a path. Returns ErrInvalid
	// when an end is not a node of the cluster and ErrConflict for a
	// duplicate.
	CreatePath(ctx context.Context, clusterID string, a, b backstop.PathEnd, priority int) ([2]backstop.Path, error)
	// FindPathByID returns ErrNotFound if the cluster has no path id.
	FindPathByID(ctx context.Context, clusterID, id string) (backstop.Path, error)
	ListPaths(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Path, string, error)
	// DeletePath deletes both directions. Returns ErrNotFound and
	// ErrPreconditionFailed.
	DeletePath(ctx context.Context, clusterID, id string, ifMatch *int64) error
}

// HierarchyStore keeps a cluster's hierarchies.
type HierarchyStore interface {
	// CreateHierarchy returns ErrInvalid (a *backstop.ValidationError)
	// for a definition that does not hold together and ErrConflict for a
	// taken name.
	CreateHierarchy(ctx context.Context, h backstop.Hierarchy) (backstop.Hierarchy, error)
	// FindHierarchyByID returns ErrNotFound if the cluster has no
	// hierarchy id.
	FindHierarchyByID(ctx context.Context, clusterID, id string) (backstop.Hierarchy, error)
	ListHierarchies(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Hierarchy, string, error)
	// UpdateHierarchy returns ErrNotFound, ErrPreconditionFailed,
	// ErrInvalid and ErrConflict.
	UpdateHierarchy(ctx context.Context, clusterID, id string, ifMatch *int64, u backstop.HierarchyUpdate) (backstop.Hierarchy, error)
	// DeleteHierarchy returns ErrNotFound, ErrPreconditionFailed and
	// ErrConflict when its state forbids it.
	DeleteHierarchy(ctx context.Context, clusterID, id string, ifMatch *int64) error
}

// FenceDeviceStore keeps nodes' fence devices.
type FenceDeviceStore interface {
	// FindFenceDevice returns ErrNotFound if the node has none.
	FindFenceDevice(ctx context.Context, clusterID, nodeID string) (backstop.FenceDevice, error)
	// PutFenceDevice creates or replaces the node's device with what
	// change makes of the current one (nil: none yet). Returns
	// ErrNotFound for an unknown node, ErrPreconditionFailed and the
	// error of change.
	PutFenceDevice(ctx context.Context, clusterID, nodeID string, ifMatch *int64, change func(cur *backstop.FenceDevice) (backstop.FenceDevice, error)) (backstop.FenceDevice, error)
	// DeleteFenceDevice returns ErrNotFound and ErrPreconditionFailed.
	DeleteFenceDevice(ctx context.Context, clusterID, nodeID string, ifMatch *int64) error
}

// AuthStore resolves credentials: API tokens and agent credentials.
type AuthStore interface {
	// Authenticate returns ErrUnauthenticated for an unknown or revoked
	// token secret.
	Authenticate(ctx context.Context, secret string) (backstop.Token, error)
	// AuthenticateAgent returns ErrUnauthenticated for an unknown agent
	// credential.
	AuthenticateAgent(ctx context.Context, credential string) (backstop.AgentIdentity, error)
}

// TokenStore keeps API tokens and shows the audit trail.
type TokenStore interface {
	// CreateToken returns the token and its secret, which is stored
	// only hashed; clusters (nil: every cluster) is its scope. Returns
	// ErrConflict for a taken name and ErrInvalid for an unknown cluster.
	CreateToken(ctx context.Context, name string, role backstop.Role, clusters []string) (backstop.Token, string, error)
	ListTokens(ctx context.Context, p backstop.Page) ([]backstop.Token, string, error)
	// DeleteToken returns ErrNotFound, and ErrConflict for the last
	// admin token.
	DeleteToken(ctx context.Context, id string, prefix *string) error
	// FindToken returns ErrNotFound for an unknown id.
	FindToken(ctx context.Context, id string) (backstop.Token, error)
	// ReissueToken gives the token a new secret and returns it.
	// ErrNotFound; ErrPreconditionFailed when prefix is set and is not
	// the token's.
	ReissueToken(ctx context.Context, id string, prefix *string) (backstop.Token, string, error)
	ListAudit(ctx context.Context, f backstop.AuditFilter, p backstop.Page) ([]backstop.AuditRecord, string, error)
}

// IdempotencyStore keeps the answers of POSTs made with an
// Idempotency-Key.
type IdempotencyStore interface {
	// ClaimIdempotencyKey claims the key for a request, or returns the
	// stored answer of an earlier one. Returns ErrIdempotencyInProgress
	// (an ErrConflict) while the first request still runs and
	// ErrIdempotencyMismatch (an ErrInvalid) when the key was used for
	// another request (method, path or body hash).
	ClaimIdempotencyKey(ctx context.Context, c backstop.IdempotencyClaim) (*backstop.StoredResponse, error)
	// CompleteIdempotencyKey stores the answer of a claimed key.
	CompleteIdempotencyKey(ctx context.Context, tokenID, key string, r backstop.StoredResponse) error
	// ReleaseIdempotencyKey gives up a claim, so a retry runs again.
	ReleaseIdempotencyKey(ctx context.Context, tokenID, key string) error
}

// AgentStore is what the node agents' endpoints need: enrollment,
// heartbeats, the command queue and results.
type AgentStore interface {
	// ListSigningKeys lists the command-signing keys, sealed.
	ListSigningKeys(ctx context.Context) ([]backstop.SealedKey, error)
	// Enroll exchanges a one-time enrollment token for the node and its
	// agent credential. Returns ErrUnauthenticated for an unknown, used
	// or expired token.
	Enroll(ctx context.Context, token string, publicKey []byte, facts backstop.HostFacts) (backstop.Node, string, error)
	// RenewLease renews the lease of an up node whose stored report has
	// digest, and nothing else, in one statement; ok false: nothing was
	// done and RecordHeartbeat must be called.
	RenewLease(ctx context.Context, a backstop.AgentIdentity, r backstop.LeaseRenewal) (ack backstop.HeartbeatAck, ok bool, err error)
	// RecordHeartbeat renews the node's lease and records its report.
	RecordHeartbeat(ctx context.Context, a backstop.AgentIdentity, r backstop.AgentReport) (backstop.HeartbeatAck, error)
	// AgentConfig returns the node's desired configuration.
	AgentConfig(ctx context.Context, a backstop.AgentIdentity) (backstop.AgentConfig, error)
	// ListenCommands calls wake with the node of every command queued
	// (by any replica) until ctx ends or the listener fails.
	ListenCommands(ctx context.Context, wake func(nodeID string)) error
	// NextCommands returns the node's queued, unexpired commands.
	NextCommands(ctx context.Context, nodeID string) ([]backstop.SignedCommand, error)
	// RecordCommandResult records a command's outcome; a move's stop
	// that succeeded has its bring-up on the target issued at once,
	// signed with sign. Returns ErrNotFound for a command the agent's
	// node does not have and ErrConflict for one already closed.
	RecordCommandResult(ctx context.Context, a backstop.AgentIdentity, commandID string, r backstop.CommandOutcome, sign backstop.Signer) (backstop.CommandEffect, error)
	// ExpireCommands closes commands whose result is overdue by more
	// than resultGrace and returns how many.
	ExpireCommands(ctx context.Context, resultGrace time.Duration) (int, error)
	// ListCommands lists a cluster's commands (nodeID "" for every node).
	ListCommands(ctx context.Context, clusterID, nodeID string, p backstop.Page) ([]backstop.CommandInfo, string, error)
}

// EngineStore is what operators' placement actions and the engine's
// views need: operations, moves, maintenance, failed marks, decisions
// and incidents.
type EngineStore interface {
	// PlaceHierarchy brings a hierarchy in service on a node, or takes
	// it out of service, by hand. Returns ErrNotFound and ErrConflict
	// when the hierarchy's state forbids it.
	PlaceHierarchy(ctx context.Context, req backstop.PlaceRequest, sign backstop.Signer) (backstop.Operation, error)
	// FindOperation returns ErrNotFound if there is no operation id.
	FindOperation(ctx context.Context, id string) (backstop.Operation, error)
	// ClusterStatus is the cluster as the engine sees it.
	ClusterStatus(ctx context.Context, clusterID string) (backstop.ClusterStatus, error)
	// StartMove starts a move in one transaction with its term check
	// (term 0: an operator's move). Returns ErrStaleTerm when term is no
	// longer the leader's and ErrConflict when the hierarchy changed
	// since the decision or a move is already running.
	StartMove(ctx context.Context, term int64, m backstop.MoveRequest, sign backstop.Signer) (backstop.Incident, *backstop.Operation, error)
	// SetMaintenance puts a node in maintenance or takes it out.
	// Returns ErrNotFound.
	SetMaintenance(ctx context.Context, clusterID, nodeID string, on bool) (backstop.Node, error)
	// ClearFailedMark returns ErrNotFound when there is no such mark.
	ClearFailedMark(ctx context.Context, clusterID, hierarchyID, nodeID string) error
	// LastDecision is the hierarchy's last recorded decision, if any.
	LastDecision(ctx context.Context, hierarchyID string) (backstop.DecisionRecord, bool, error)
	FailedMarks(ctx context.Context, hierarchyID string) ([]backstop.FailedMark, error)
	ListIncidents(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Incident, string, error)
	// OperationsDone says whether every operation of ids has ended.
	OperationsDone(ctx context.Context, ids []string) (bool, error)
}

// EventStore reads the event log.
type EventStore interface {
	// ListEvents reads the events f selects. Returns ErrNotFound for an
	// unknown cluster.
	ListEvents(ctx context.Context, f backstop.EventFilter) ([]backstop.Event, error)
	// ListenEvents calls fn for every event committed (by any replica)
	// until ctx ends or the listener fails.
	ListenEvents(ctx context.Context, fn func(backstop.EventSignal)) error
}

// TargetStore keeps webhook and SNMP targets (kind is
// backstop.TargetWebhook or backstop.TargetSNMP) and their deliveries.
type TargetStore interface {
	// CreateTarget returns ErrConflict for a taken id.
	CreateTarget(ctx context.Context, t backstop.Target) (backstop.Target, error)
	// FindTarget returns ErrNotFound if there is no target id of kind.
	FindTarget(ctx context.Context, kind, id string) (backstop.Target, error)
	ListTargets(ctx context.Context, kind string, p backstop.Page) ([]backstop.Target, string, error)
	// UpdateTarget applies change to the current target in one
	// transaction. Returns ErrNotFound, ErrPreconditionFailed and the
	// error of change.
	UpdateTarget(ctx context.Context, kind, id string, ifMatch *int64, change func(backstop.Target) (backstop.Target, error)) (backstop.Target, error)
	// DeleteTarget returns ErrNotFound and ErrPreconditionFailed.
	DeleteTarget(ctx context.Context, kind, id string, ifMatch *int64) error
	// ListDeliveries lists a target's deliveries (status "" for all).
	// Returns ErrNotFound for an unknown target.
	ListDeliveries(ctx context.Context, kind, targetID, status string, p backstop.Page) ([]backstop.Delivery, string, error)
	// FindDelivery returns ErrNotFound.
	FindDelivery(ctx context.Context, kind, targetID, id string) (backstop.Delivery, error)
	// Redeliver queues a delivery's event again. Returns ErrNotFound
	// and ErrConflict when the target is disabled.
	Redeliver(ctx context.Context, kind, targetID, id string) (backstop.Delivery, error)
	// SNMPEngine is this installation's SNMPv3 engine.
	SNMPEngine(ctx context.Context) (backstop.SNMPEngine, error)
}
