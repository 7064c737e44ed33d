// Package seal encrypts the small secrets backstopd keeps in PostgreSQL
// (command-signing keys, webhook signing secrets, SNMP credentials,
// fence-device options) with AES-256-GCM, under keys derived from the
// operator's secret key (--secret-key-file): a database dump alone can
// neither forge commands or webhooks nor read the credentials.
//
// A sealed value is the 12-byte nonce followed by the ciphertext and the
// 16-byte tag, with the id of its owner (a key id, a target id,
// backstop.FenceSealID) as additional data, so that a value copied into
// another row does not open there. Sealed values live in the database:
// the format and the key derivation cannot change without a migration
// (TestOpensValuesSealedBefore holds values sealed by earlier code).
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Labels that DeriveKey mixes into the operator's secret, one per use, so
// that each use has a key of its own.
const (
	// LabelSigningKeys derives the key of the command-signing keys. It is
	// empty because those keys were sealed before uses were labelled.
	LabelSigningKeys = ""
	// LabelDelivery derives the key of webhook and SNMP target secrets and
	// of fence-device secrets.
	LabelDelivery = "backstop delivery secrets v1\x00"
)

// MinSecretLen is the shortest operator secret DeriveKey accepts.
const MinSecretLen = 16

// ErrShortSecret is returned by DeriveKey for a secret shorter than
// MinSecretLen.
var ErrShortSecret = errors.New("the secret key must be at least 16 bytes (e.g. `openssl rand -base64 32`)")

// ErrCannotOpen is returned (wrapped) by Open when the value was sealed
// under another key or for another id, or was altered.
var ErrCannotOpen = errors.New("cannot be unsealed with this secret key (was --secret-key-file changed?)")

// DeriveKey returns the AES-256 key for the use named by label:
// SHA-256(label || secret). Any secret of at least MinSecretLen bytes
// works; it returns ErrShortSecret otherwise.
func DeriveKey(label string, secret []byte) ([]byte, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrShortSecret
	}
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(secret)
	return h.Sum(nil), nil
}

// Sealer seals and opens values bound to an id. It is safe for concurrent
// use.
type Sealer struct {
	aead cipher.AEAD
	// subject names what is sealed, for errors: "<subject> <id> cannot be
	// unsealed ...".
	subject string
}

// New returns a sealer under key, a 32-byte key from DeriveKey. subject
// names what it seals in errors, such as "secret of target".
func New(key []byte, subject string) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("seal: key of %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Sealer{aead: aead, subject: subject}, nil
}

// Seal seals plain for id, under a random nonce.
func (s *Sealer) Seal(id string, plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
	return s.aead.Seal(nonce, nonce, plain, []byte(id))
}

// Open unseals what Seal sealed for id. It returns ErrCannotOpen (wrapped)
// when the value was sealed under another key or for another id.
func (s *Sealer) Open(id string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("%s %s: sealed value too short", s.subject, id)
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("%s %s %w", s.subject, id, ErrCannotOpen)
	}
	return plain, nil
}
