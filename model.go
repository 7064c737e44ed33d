package backstop

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// MaxNodes is the largest cluster Backstop manages.
const MaxNodes = 64

// Switchback policies.
const (
	SwitchbackIntelligent = "intelligent"
	SwitchbackAutomatic   = "automatic"
)

// Fencing policies.
const (
	FencingSelf = "self"
	FencingNone = "none"
)

// NodeState is what the control plane knows of a node.
type NodeState string

// Node states.
const (
	// NodePending: created, its agent not enrolled yet.
	NodePending NodeState = "pending"
	// NodeUp: its lease runs.
	NodeUp NodeState = "up"
	// NodeDown: its lease ran out and a live peer sees it dead on every
	// path; its hierarchies fail over (after its fence, with a device).
	NodeDown NodeState = "down"
	// NodeUnreachable: its lease ran out but a peer still sees it;
	// nothing moves.
	NodeUnreachable NodeState = "unreachable"
	// NodeMaintenance is shown for a node in maintenance (a flag beside
	// the state in storage).
	NodeMaintenance NodeState = "maintenance"
)

// Cluster is a group of 2..64 nodes that back each other up.
type Cluster struct {
	ID                string
	Name              string
	Description       string
	TimingProfile     string
	Timing            Timing
	SwitchbackDefault string
	Fencing           string
	Version           int64
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// ClusterUpdate lists the fields to change on a cluster; nil leaves a field
// alone. Timing is resolved by the caller together with TimingProfile.
type ClusterUpdate struct {
	Name              *string
	Description       *string
	TimingProfile     *string
	Timing            *Timing
	SwitchbackDefault *string
	Fencing           *string
}

// Node is a server that runs backstop-agent.
type Node struct {
	ID          string
	ClusterID   string
	Name        string
	Description string
	State       NodeState
	// Maintenance takes the node out of every hierarchy's candidates.
	Maintenance bool
	// Agent is nil until the node's agent enrolls.
	Agent     *NodeAgent
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// NodeUpdate lists the fields to change on a node; nil leaves a field alone.
type NodeUpdate struct {
	Name        *string
	Description *string
}

// Enrollment is the one-time credential an agent uses to enroll. Only its
// hash is stored.
type Enrollment struct {
	Token     string
	ExpiresAt time.Time
}

// EnrollmentTTL is how long a node's enrollment token stays valid.
const EnrollmentTTL = 24 * time.Hour

// PathEnd is one end of a communication path.
type PathEnd struct {
	NodeID  string
	Address string
}

// Path is one direction of a communication path (heartbeat link) between
// two nodes. Both directions share LinkID and are created and deleted
// together.
type Path struct {
	ID            string
	ClusterID     string
	LinkID        string
	ReverseID     string
	LocalNodeID   string
	LocalAddress  string
	RemoteNodeID  string
	RemoteAddress string
	Priority      int
	CreatedAt     time.Time
}

// Version reports the ETag version of a path: paths are immutable.
func (p *Path) Version() int64 { return 1 }

// Role is an API token's role. Roles are ordered: viewer < operator < admin.
type Role string

// Roles.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether a token of role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// Token is an API token. Its secret is shown once and stored as a hash.
type Token struct {
	ID         string
	Name       string
	Role       Role
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	// Clusters limits the token to these clusters; nil: every cluster.
	Clusters []string
}

// AuditFilter narrows the audit trail; zero fields do not filter.
type AuditFilter struct {
	// Actor is exact ("token:ci"); ClusterID names a cluster.
	Actor, ClusterID string
	// Action is exact ("hierarchy.update") or a prefix ending in ".*"
	// ("hierarchy.*").
	Action string
	// Since and Until bound the time of the change: Since <= at < Until.
	Since, Until time.Time
	// Newest lists the newest first (else the oldest first).
	Newest bool
}

// AuditRecord is one mutation: who did what to which object, and when.
type AuditRecord struct {
	ID           int64
	At           time.Time
	Actor        string
	ActorTokenID string
	Action       string
	TargetType   string
	TargetID     string
	ClusterID    string
	Details      map[string]any
}

// Actor is the authenticated caller of a request.
type Actor struct {
	TokenID string
	Name    string
	Role    Role
	// Scope is the token's cluster scope (Token.Clusters); nil: every
	// cluster.
	Scope []string
}

// Sees reports whether the actor may see cluster id: it is unscoped or
// the cluster is in its scope.
func (a Actor) Sees(clusterID string) bool {
	return a.Scope == nil || slices.Contains(a.Scope, clusterID)
}

// String names the actor in the audit trail.
func (a Actor) String() string {
	if a.TokenID == "" {
		return "system"
	}
	return "token:" + a.Name
}

type actorKey struct{}

// WithActor returns a context carrying the authenticated caller.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the caller carried by ctx, or the system actor.
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}

// Page asks for one page of a list: at most Limit items after Cursor (the
// last key of the previous page, opaque to clients).
type Page struct {
	Limit  int
	Cursor string
	// Name, when set, keeps only the object of that name (the lists of
	// clusters, nodes and hierarchies, whose names are unique): a lookup
	// by name is a list of zero or one item.
	Name string
}

// DefaultPageLimit is the page size when a client gives none.
const DefaultPageLimit = 100

// StoredResponse is an HTTP response kept for an Idempotency-Key, replayed
// when the same request comes again.
type StoredResponse struct {
	Status  int
	Headers map[string][]string
	Body    []byte
}

// ErrIdempotencyInProgress is returned when the first request with an
// Idempotency-Key is still running.
var ErrIdempotencyInProgress = fmt.Errorf("%w: a request with this Idempotency-Key is still in progress; retry later", ErrConflict)

// ErrIdempotencyMismatch is returned when an Idempotency-Key was already
// used for a different request.
var ErrIdempotencyMismatch = Invalid("header.Idempotency-Key", "this key was already used with a different request body or path; use a new key")
