package notify

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Sealer seals target secrets (webhook signing secrets, SNMP community
// and passphrases) with AES-256-GCM before they reach PostgreSQL, under a
// key derived from the operator's secret key (--secret-key-file), as the
// command-signing keys are: a database dump alone cannot forge webhooks
// or read the SNMP keys. Each secret is bound to its target's id.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer derives the sealing key from the operator's secret.
func NewSealer(operatorSecret []byte) (*Sealer, error) {
	if len(operatorSecret) < 16 {
		return nil, errors.New("notify: the secret key must be at least 16 bytes")
	}
	// A key of its own, distinct from the signing keys' sealing key.
	k := sha256.Sum256(append([]byte("backstop delivery secrets v1\x00"), operatorSecret...))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal seals plain for the target id.
func (s *Sealer) Seal(targetID string, plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
	return s.aead.Seal(nonce, nonce, plain, []byte(targetID))
}

// Open unseals what Seal sealed for the target id.
func (s *Sealer) Open(targetID string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("secret of target %s: too short", targetID)
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(targetID))
	if err != nil {
		return nil, fmt.Errorf("secret of target %s cannot be unsealed with this secret key (was --secret-key-file changed?)", targetID)
	}
	return plain, nil
}
