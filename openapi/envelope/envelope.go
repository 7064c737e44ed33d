// Package envelope is the signed command envelope shared by backstopd,
// which signs, and backstop-agent, which verifies. A command is signed with
// Ed25519 over its canonical bytes: a domain-separation prefix followed by
// the command's JSON encoding (Go's encoding/json is deterministic for a
// given struct: fields in declaration order, map keys sorted). The envelope
// carries those exact bytes, so the verifier never re-encodes anything
// before checking the signature.
package envelope

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/backstop-ha/backstop"
)

// Action is what a command asks an agent to do.
type Action string

// Actions.
const (
	BringInService   Action = "bring_in_service"
	TakeOutOfService Action = "take_out_of_service"
	RestartResource  Action = "restart_resource"
	MoveIP           Action = "move_ip"
)

// Valid reports whether a is a known action.
func (a Action) Valid() bool {
	switch a {
	case BringInService, TakeOutOfService, RestartResource, MoveIP:
		return true
	}
	return false
}

// Command is one signed instruction to one agent.
type Command struct {
	ID          string    `json:"id"`
	ClusterID   string    `json:"cluster_id"`
	NodeID      string    `json:"node_id"`
	HierarchyID string    `json:"hierarchy_id"`
	Hierarchy   string    `json:"hierarchy"`
	Epoch       int64     `json:"epoch"`
	Term        int64     `json:"term"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Action      Action    `json:"action"`
	// Resources are in bring-up order (children first); take-down runs
	// them in reverse.
	Resources []backstop.Resource `json:"resources"`
	// Target names the resource of restart_resource and move_ip.
	Target string `json:"target,omitempty"`
	// Interface is the destination interface of move_ip.
	Interface string `json:"interface,omitempty"`
}

// Envelope is a command as it travels: the canonical payload, the id of
// the signing key and the signature.
type Envelope struct {
	Payload   []byte `json:"payload"` // base64 in JSON
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// domain separates command signatures from every other use of the keys.
const domain = "backstop-command-v1\n"

// KeyEndorsementDomain separates key endorsements (a trusted key signing a
// new one during rotation).
const KeyEndorsementDomain = "backstop-signing-key-v1\n"

func signedBytes(payload []byte) []byte {
	return append([]byte(domain), payload...)
}

// Sign encodes c and signs it with key.
func Sign(c Command, keyID string, key ed25519.PrivateKey) (Envelope, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode command: %w", err)
	}
	return Envelope{Payload: payload, KeyID: keyID, Signature: ed25519.Sign(key, signedBytes(payload))}, nil
}

// EndorsementBytes are the bytes a trusted key signs to vouch for a new
// key: the domain, the new key's id and its public key.
func EndorsementBytes(keyID string, pub ed25519.PublicKey) []byte {
	b := append([]byte(KeyEndorsementDomain), keyID...)
	b = append(b, 0)
	return append(b, pub...)
}

// Fingerprint is a short, printable digest of a public key, embedded in
// enrollment tokens so an agent can tell the real control plane's key.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// Reason is a machine-readable cause of a rejection, reported by the agent
// back to the control plane.
type Reason string

// Rejection reasons.
const (
	ReasonMalformed    Reason = "malformed"
	ReasonUnknownKey   Reason = "unknown_key"
	ReasonBadSignature Reason = "bad_signature"
	ReasonWrongCluster Reason = "wrong_cluster"
	ReasonWrongNode    Reason = "wrong_node"
	ReasonExpired      Reason = "expired"
	ReasonReplay       Reason = "replay"
	ReasonStaleEpoch   Reason = "stale_epoch"
	ReasonStaleTerm    Reason = "stale_term"
)

// Rejection is the error of a refused command.
type Rejection struct {
	Reason Reason
	Detail string
}

func (r *Rejection) Error() string { return "command rejected: " + string(r.Reason) + ": " + r.Detail }

func reject(reason Reason, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the rejection reason of err, or "" when err is not a
// *Rejection.
func ReasonOf(err error) Reason {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

// Memory is what a verifier remembers across commands (and, through the
// agent's state file, across restarts).
type Memory interface {
	// Seen reports whether a command id was already accepted.
	Seen(id string) bool
	// Newest returns the newest epoch applied for a hierarchy and the
	// newest leader term seen at all.
	Newest(hierarchyID string) (epoch, term int64)
}

// Verifier checks envelopes addressed to one node.
type Verifier struct {
	ClusterID string
	NodeID    string
	// Keys are the trusted public keys by key id.
	Keys map[string]ed25519.PublicKey
	// Memory remembers accepted ids, epochs and terms.
	Memory Memory
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks e and returns its command. The checks run cheapest-safe
// first but the signature is always verified before the payload is
// trusted for anything: a malformed or forged payload is never parsed for
// its claims. It does not record the command; the caller does once it has
// durably accepted it.
func (v *Verifier) Verify(e Envelope) (*Command, error) {
	key, ok := v.Keys[e.KeyID]
	if !ok {
		return nil, reject(ReasonUnknownKey, "key id %q is not trusted by this agent", e.KeyID)
	}
	if len(e.Signature) != ed25519.SignatureSize || !ed25519.Verify(key, signedBytes(e.Payload), e.Signature) {
		return nil, reject(ReasonBadSignature, "signature does not verify with key %q", e.KeyID)
	}
	var c Command
	if err := json.Unmarshal(e.Payload, &c); err != nil {
		return nil, reject(ReasonMalformed, "payload: %v", err)
	}
	if c.ID == "" || c.HierarchyID == "" || !c.Action.Valid() {
		return nil, reject(ReasonMalformed, "command lacks an id, a hierarchy or a known action (%q)", c.Action)
	}
	if c.ClusterID != v.ClusterID {
		return nil, reject(ReasonWrongCluster, "command %s is for cluster %s, this node is in %s", c.ID, c.ClusterID, v.ClusterID)
	}
	if c.NodeID != v.NodeID {
		return nil, reject(ReasonWrongNode, "command %s is for node %s, this is %s", c.ID, c.NodeID, v.NodeID)
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if !now.Before(c.ExpiresAt) {
		return nil, reject(ReasonExpired, "command %s expired at %s (now %s)", c.ID, c.ExpiresAt.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
	}
	if v.Memory != nil {
		if v.Memory.Seen(c.ID) {
			return nil, reject(ReasonReplay, "command %s was already accepted", c.ID)
		}
		epoch, term := v.Memory.Newest(c.HierarchyID)
		if c.Term < term {
			return nil, reject(ReasonStaleTerm, "command %s carries leader term %d, this node has seen term %d", c.ID, c.Term, term)
		}
		if c.Epoch < epoch {
			return nil, reject(ReasonStaleEpoch, "command %s carries epoch %d for hierarchy %s, this node has applied epoch %d", c.ID, c.Epoch, c.Hierarchy, epoch)
		}
	}
	return &c, nil
}
