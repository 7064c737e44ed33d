package nodeagent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/pki"
)

// identity is what enrollment gave this agent.
type identity struct {
	NodeID     string    `json:"node_id"`
	ClusterID  string    `json:"cluster_id"`
	NodeName   string    `json:"node_name"`
	Credential string    `json:"credential"`
	EnrolledAt time.Time `json:"enrolled_at"`
	// CAFingerprint is the control plane's CA its enrollment token pinned
	// (its certificate is in fileCA); empty when the token pinned none.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
}

// loadOrCreateKey returns the agent's Ed25519 key, generating it on first
// start. The key never leaves the data directory; only its public half is
// sent, at enrollment.
func loadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, fileKey)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate agent key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("encode agent key: %w", err)
		}
		if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return nil, err
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key (%T)", path, k)
	}
	return priv, nil
}

// enrollToken is what an enrollment token tells the agent about the
// control plane it was issued by.
type enrollToken struct {
	// KeyFP is the fingerprint of the command-signing key
	// (envelope.Fingerprint).
	KeyFP string
	// CAFP is the SHA-256 fingerprint of the CA certificate of the
	// server's TLS certificate (pki.Fingerprint); empty in tokens of a
	// control plane serving plain HTTP, and in tokens made before TLS.
	CAFP string
}

// parseEnrollToken splits an enrollment token
// `bse_<secret>.<key fingerprint>[.<CA fingerprint>]`. Tokens without the
// CA part (plain HTTP, or issued before TLS) still work: the server is
// then verified with the system's or --ca-file's CAs.
func parseEnrollToken(tok string) (enrollToken, error) {
	const form = "bse_<secret>.<key fingerprint>[.<CA fingerprint>]"
	rest, ok := strings.CutPrefix(tok, "bse_")
	if !ok {
		return enrollToken{}, errors.New("enrollment token must look like " + form)
	}
	parts := strings.Split(rest, ".")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return enrollToken{}, errors.New("enrollment token must look like " + form + " (a part is missing)")
	}
	t := enrollToken{KeyFP: parts[1]}
	if len(parts) == 3 {
		fp, err := pki.NormalizeFingerprint(parts[2])
		if err != nil {
			return enrollToken{}, fmt.Errorf("enrollment token: %w", err)
		}
		t.CAFP = fp
	}
	return t, nil
}

// trustedKey is a command-signing key this agent accepts envelopes from.
type trustedKey struct {
	KeyID      string    `json:"key_id"`
	PublicKey  []byte    `json:"public_key"`
	EndorsedBy string    `json:"endorsed_by,omitempty"`
	TrustedAt  time.Time `json:"trusted_at"`
}

// ErrFingerprintMismatch is returned by enrollment when none of the
// signing keys the server returned matches the fingerprint embedded in the
// enrollment token: the server is not the control plane that issued the
// token (or the token was mistyped), so the agent stores nothing.
var ErrFingerprintMismatch = errors.New("no signing key of the server matches the enrollment token's fingerprint")

// checkEnrollment decides which keys an enrollment answer makes this agent
// trust: exactly the keys returned, and only if one of them has the
// fingerprint of the token. Fingerprints are computed here from the public
// keys; the answer's own fingerprint fields are not believed.
func checkEnrollment(e *client.Enrollment, fingerprint string, now time.Time) ([]trustedKey, error) {
	if e == nil {
		return nil, errors.New("empty enrollment answer")
	}
	var keys []trustedKey
	matched := false
	seen := map[string]bool{}
	for _, k := range e.SigningKeys {
		if len(k.PublicKey) != ed25519.PublicKeySize || k.KeyId == "" || seen[k.KeyId] {
			return nil, fmt.Errorf("enrollment answer carries an invalid or duplicate signing key %q", k.KeyId)
		}
		seen[k.KeyId] = true
		if envelope.Fingerprint(k.PublicKey) == fingerprint {
			matched = true
		}
		keys = append(keys, trustedKey{KeyID: k.KeyId, PublicKey: bytes.Clone(k.PublicKey), TrustedAt: now})
	}
	if !matched {
		got := make([]string, 0, len(e.SigningKeys))
		for _, k := range e.SigningKeys {
			got = append(got, k.KeyId+"="+envelope.Fingerprint(k.PublicKey))
		}
		return nil, fmt.Errorf("%w: token wants %s, server offered [%s]", ErrFingerprintMismatch, fingerprint, strings.Join(got, ", "))
	}
	if e.NodeId.String() == "" || e.Credential == "" {
		return nil, errors.New("enrollment answer lacks a node id or a credential")
	}
	return keys, nil
}

// keyring holds the trusted command-signing keys, persisted in the data
// directory.
type keyring struct {
	path string
	log  *slog.Logger
	// mu guards the fields below.
	mu   sync.Mutex
	keys map[string]trustedKey
}

func loadKeyring(dir string, log *slog.Logger) (*keyring, error) {
	kr := &keyring{path: filepath.Join(dir, fileTrustedKeys), log: log, keys: map[string]trustedKey{}}
	var list []trustedKey
	if _, err := loadJSON(kr.path, &list); err != nil {
		return nil, err
	}
	for _, k := range list {
		if len(k.PublicKey) == ed25519.PublicKeySize {
			kr.keys[k.KeyID] = k
		}
	}
	return kr, nil
}

// set replaces the keys (enrollment) and persists them.
func (kr *keyring) set(keys []trustedKey) error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	kr.keys = map[string]trustedKey{}
	for _, k := range keys {
		kr.keys[k.KeyID] = k
	}
	return kr.saveLocked()
}

func (kr *keyring) saveLocked() error {
	list := make([]trustedKey, 0, len(kr.keys))
	for _, k := range kr.keys {
		list = append(list, k)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].KeyID < list[j].KeyID })
	return saveJSON(kr.path, list)
}

// snapshot returns the trusted public keys by key id, for a Verifier.
func (kr *keyring) snapshot() map[string]ed25519.PublicKey {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	m := make(map[string]ed25519.PublicKey, len(kr.keys))
	for id, k := range kr.keys {
		m[id] = ed25519.PublicKey(k.PublicKey)
	}
	return m
}

// offer considers the signing keys of a configuration: a key not yet
// trusted becomes trusted only when its endorsement verifies with the key
// it names as endorser, which must already be trusted (possibly through
// another key of the same offer: rotations can chain). Keys are never
// removed here: a configuration is not signed, so it may add trust only
// through endorsements and may not take it away.
func (kr *keyring) offer(offered []client.SigningKey, now time.Time) (added []string, err error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	pending := map[string]client.SigningKey{}
	for _, k := range offered {
		if t, ok := kr.keys[k.KeyId]; ok {
			if !bytes.Equal(t.PublicKey, k.PublicKey) {
				kr.log.Error("configuration offers a different public key under a trusted key id; ignored",
					keyEvent, eventKeyRefused, keyKeyID, k.KeyId)
			}
			continue
		}
		pending[k.KeyId] = k
	}
	for progress := true; progress && len(pending) > 0; {
		progress = false
		for id, k := range pending {
			ok, why := endorsed(kr.keys, k)
			if !ok {
				if why == "" { // endorser not trusted yet: maybe later in this pass
					continue
				}
				kr.log.Error("signing key refused", keyEvent, eventKeyRefused, keyKeyID, id, keyReason, why)
				delete(pending, id)
				continue
			}
			kr.keys[id] = trustedKey{KeyID: id, PublicKey: bytes.Clone(k.PublicKey), EndorsedBy: *k.EndorsedBy, TrustedAt: now}
			added = append(added, id)
			delete(pending, id)
			progress = true
		}
	}
	for id, k := range pending {
		by := ""
		if k.EndorsedBy != nil {
			by = *k.EndorsedBy
		}
		kr.log.Error("signing key refused", keyEvent, eventKeyRefused, keyKeyID, id,
			keyReason, fmt.Sprintf("not endorsed by a trusted key (endorsed_by %q)", by))
	}
	if len(added) == 0 {
		return nil, nil
	}
	sort.Strings(added)
	for _, id := range added {
		kr.log.Info("signing key trusted", keyEvent, eventKeyTrusted, keyKeyID, id, "endorsed_by", kr.keys[id].EndorsedBy)
	}
	return added, kr.saveLocked()
}

// endorsed reports whether k is endorsed by a key of trusted. A false with
// an empty reason means the endorser is not (yet) trusted.
func endorsed(trusted map[string]trustedKey, k client.SigningKey) (bool, string) {
	if len(k.PublicKey) != ed25519.PublicKeySize {
		return false, "public key is not 32 bytes"
	}
	if k.EndorsedBy == nil || k.Endorsement == nil || *k.EndorsedBy == "" {
		return false, "no endorsement"
	}
	by, ok := trusted[*k.EndorsedBy]
	if !ok {
		return false, ""
	}
	if !ed25519.Verify(ed25519.PublicKey(by.PublicKey), envelope.EndorsementBytes(k.KeyId, k.PublicKey), *k.Endorsement) {
		return false, fmt.Sprintf("endorsement by %q does not verify", *k.EndorsedBy)
	}
	return true, ""
}
