// Package signing keeps the control plane's Ed25519 command-signing keys:
// it creates the first key, seals private keys (package seal) under the
// operator's secret key before they reach PostgreSQL, rotates keys (each
// new key endorsed by the previous one, so agents can trust it), and signs
// commands into envelopes.
package signing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/server/seal"
)

// KeyStore is the persistence the keyring needs.
type KeyStore interface {
	EnsureSigningKey(ctx context.Context, create func() (backstop.SealedKey, error)) (backstop.SealedKey, error)
	ListSigningKeys(ctx context.Context) ([]backstop.SealedKey, error)
	RotateSigningKey(ctx context.Context, k backstop.SealedKey) error
}

// CommandTTL is how long an agent accepts a command after it was signed.
const CommandTTL = 30 * time.Second

// Keyring signs commands with the active key.
type Keyring struct {
	store  KeyStore
	sealer *seal.Sealer

	// mu guards the fields below.
	mu     sync.Mutex
	active backstop.SealedKey
	priv   ed25519.PrivateKey
}

// SecretKeyFromBytes derives the sealing key from the operator's secret
// (the content of --secret-key-file or BACKSTOP_SECRET_KEY). Any secret of
// at least 16 bytes works; SHA-256 turns it into an AES-256 key (see
// package seal).
func SecretKeyFromBytes(secret []byte) ([]byte, error) {
	return seal.DeriveKey(seal.LabelSigningKeys, secret)
}

// Open loads the active key, creating the first one on the first start.
// It fails when the active key cannot be unsealed with secretKey (a wrong
// or changed secret key): signing with a new key would orphan every agent.
func Open(ctx context.Context, ks KeyStore, secretKey []byte) (*Keyring, error) {
	sealer, err := seal.New(secretKey, "signing: key")
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	k := &Keyring{store: ks, sealer: sealer}
	active, err := ks.EnsureSigningKey(ctx, func() (backstop.SealedKey, error) { return k.newKey(nil) })
	if err != nil {
		return nil, fmt.Errorf("signing: load the active key: %w", err)
	}
	if err := k.use(active); err != nil {
		return nil, err
	}
	return k, nil
}

// newKey generates a key, sealed, endorsed by the current one if any.
func (k *Keyring) newKey(endorser *backstop.SealedKey) (backstop.SealedKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return backstop.SealedKey{}, err
	}
	sk := backstop.SealedKey{SigningKey: backstop.SigningKey{KeyID: "k-" + uuid.Must(uuid.NewV7()).String()[:13], PublicKey: pub, Active: true}}
	sk.PrivateSealed = k.sealer.Seal(sk.KeyID, priv.Seed())
	if endorser != nil {
		sk.EndorsedBy = endorser.KeyID
		sk.Endorsement = ed25519.Sign(k.priv, envelope.EndorsementBytes(sk.KeyID, pub))
	}
	return sk, nil
}

func (k *Keyring) unseal(sk backstop.SealedKey) (ed25519.PrivateKey, error) {
	seed, err := k.sealer.Open(sk.KeyID, sk.PrivateSealed)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func (k *Keyring) use(sk backstop.SealedKey) error {
	priv, err := k.unseal(sk)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.active, k.priv = sk, priv
	return nil
}

// Fingerprint is the fingerprint of the active key, for enrollment tokens.
func (k *Keyring) Fingerprint() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return envelope.Fingerprint(k.active.PublicKey)
}

// Refresh reloads the active key, after another replica rotated it.
func (k *Keyring) Refresh(ctx context.Context) error {
	keys, err := k.store.ListSigningKeys(ctx)
	if err != nil {
		return err
	}
	for _, sk := range keys {
		if sk.Active {
			k.mu.Lock()
			same := sk.KeyID == k.active.KeyID
			k.mu.Unlock()
			if same {
				return nil
			}
			return k.use(sk)
		}
	}
	return errors.New("signing: no active key")
}

// Rotate makes a new key, endorsed by the active one, the active key.
func (k *Keyring) Rotate(ctx context.Context) (backstop.SigningKey, error) {
	if err := k.Refresh(ctx); err != nil {
		return backstop.SigningKey{}, err
	}
	k.mu.Lock()
	cur := k.active
	k.mu.Unlock()
	sk, err := k.newKey(&cur)
	if err != nil {
		return backstop.SigningKey{}, err
	}
	if err := k.store.RotateSigningKey(ctx, sk); err != nil {
		return backstop.SigningKey{}, err
	}
	if err := k.use(sk); err != nil {
		return backstop.SigningKey{}, err
	}
	return sk.SigningKey, nil
}

// Sign signs a command spec with the active key; it returns the signed
// command and its issue and expiry times.
func (k *Keyring) Sign(spec backstop.CommandSpec) (backstop.SignedCommand, time.Time, time.Time, error) {
	k.mu.Lock()
	keyID, priv := k.active.KeyID, k.priv
	k.mu.Unlock()
	issued := time.Now().UTC().Truncate(time.Microsecond)
	expires := issued.Add(CommandTTL)
	e, err := envelope.Sign(envelope.Command{
		ID: spec.ID, ClusterID: spec.ClusterID, NodeID: spec.NodeID, HierarchyID: spec.HierarchyID, Hierarchy: spec.Hierarchy,
		Epoch: spec.Epoch, Term: spec.Term, IssuedAt: issued, ExpiresAt: expires,
		Action: envelope.Action(spec.Action), Resources: spec.Resources,
	}, keyID, priv)
	if err != nil {
		return backstop.SignedCommand{}, issued, expires, err
	}
	return backstop.SignedCommand{ID: spec.ID, Payload: e.Payload, KeyID: e.KeyID, Signature: e.Signature}, issued, expires, nil
}

// SignEnvelope signs an arbitrary command with the active key, exactly as
// given (times included). Sign builds commands from specs; this exists for
// tools and tests that must craft one, such as an expired command.
func (k *Keyring) SignEnvelope(c envelope.Command) (envelope.Envelope, error) {
	k.mu.Lock()
	keyID, priv := k.active.KeyID, k.priv
	k.mu.Unlock()
	return envelope.Sign(c, keyID, priv)
}
