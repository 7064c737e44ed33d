package backstop

import (
	"time"
)

// SigningKey is a command-signing public key of the control plane.
type SigningKey struct {
	KeyID       string
	PublicKey   []byte
	Active      bool
	EndorsedBy  string
	Endorsement []byte
	CreatedAt   time.Time
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
