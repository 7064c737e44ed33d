package notify

import (
	"fmt"

	"github.com/backstop-ha/backstop/server/seal"
)

// NewSealer returns the sealer of target secrets (webhook signing secrets,
// SNMP community and passphrases) and of fence-device secrets, which
// seals them before they reach PostgreSQL under a key derived from the
// operator's secret key (--secret-key-file) and distinct from the
// command-signing keys' sealing key. Each secret is bound to its target's
// id (backstop.FenceSealID for a fence device).
func NewSealer(operatorSecret []byte) (*seal.Sealer, error) {
	key, err := seal.DeriveKey(seal.LabelDelivery, operatorSecret)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return seal.New(key, "secret of target")
}
