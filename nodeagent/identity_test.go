package nodeagent

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

func TestParseEnrollToken(t *testing.T) {
	ca := strings.Repeat("ab", 32)
	for tok, want := range map[string]enrollToken{
		"bse_4Zb1pQ0yJm3sQ9x8.AbCdEfGhIjKlMnOp":       {KeyFP: "AbCdEfGhIjKlMnOp"},
		"bse_4Zb1pQ0yJm3sQ9x8.AbCdEfGhIjKlMnOp." + ca: {KeyFP: "AbCdEfGhIjKlMnOp", CAFP: ca},
		"bse_s.k." + strings.ToUpper(ca):              {KeyFP: "k", CAFP: ca},
		"bse_a.b.c":                                   {}, // c is no SHA-256 fingerprint
		"bse_.fp":                                     {},
		"bse_secret":                                  {},
		"bse_secret.":                                 {},
		"bse_s.k." + ca + ".x":                        {},
		"bsk_secret.fp":                               {},
		"":                                            {},
	} {
		got, err := parseEnrollToken(tok)
		if (err == nil) != (want.KeyFP != "") || got != want {
			t.Errorf("parseEnrollToken(%q) = %+v, %v; want %+v", tok, got, err, want)
		}
	}
}

func TestAgentKeyIsCreatedOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("key changed between starts")
	}
	fi, _ := os.Stat(filepath.Join(dir, fileKey))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
}

func signingKey(id string, pub ed25519.PublicKey) client.SigningKey {
	return client.SigningKey{KeyId: id, PublicKey: pub, Fingerprint: "whatever the server claims", CreatedAt: time.Now()}
}

func endorse(k client.SigningKey, byID string, by ed25519.PrivateKey) client.SigningKey {
	sig := ed25519.Sign(by, envelope.EndorsementBytes(k.KeyId, k.PublicKey))
	k.EndorsedBy, k.Endorsement = &byID, &sig
	return k
}

func TestCheckEnrollment(t *testing.T) {
	pub1, _, _ := ed25519.GenerateKey(nil)
	pub2, _, _ := ed25519.GenerateKey(nil)
	e := &client.Enrollment{NodeId: uuid.MustParse(testNode), ClusterId: uuid.MustParse(testCluster), Credential: "bsa_x",
		SigningKeys: []client.SigningKey{signingKey("k1", pub1), signingKey("k2", pub2)}}
	keys, err := checkEnrollment(e, envelope.Fingerprint(pub2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID != "k1" || !bytes.Equal(keys[1].PublicKey, pub2) {
		t.Fatalf("keys %+v", keys)
	}
	pubX, _, _ := ed25519.GenerateKey(nil)
	if _, err := checkEnrollment(e, envelope.Fingerprint(pubX), time.Now()); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("foreign fingerprint: %v", err)
	}
	bad := *e
	bad.SigningKeys = []client.SigningKey{signingKey("k1", pub1[:16])}
	if _, err := checkEnrollment(&bad, envelope.Fingerprint(pub1), time.Now()); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestKeyringAcceptsOnlyEndorsedKeys(t *testing.T) {
	dir := t.TempDir()
	pub1, priv1, _ := ed25519.GenerateKey(nil)
	pub2, priv2, _ := ed25519.GenerateKey(nil)
	pub3, _, _ := ed25519.GenerateKey(nil)
	pubF, privF, _ := ed25519.GenerateKey(nil)
	pubX, _, _ := ed25519.GenerateKey(nil)
	kr, _ := loadKeyring(dir, testLogger(t))
	if err := kr.set([]trustedKey{{KeyID: "k1", PublicKey: pub1}}); err != nil {
		t.Fatal(err)
	}
	offered := []client.SigningKey{
		signingKey("k1", pub1),
		endorse(signingKey("k3", pub3), "k2", priv2), // chained, listed before its endorser
		endorse(signingKey("k2", pub2), "k1", priv1),
		endorse(signingKey("kf", pubF), "kx", privF), // endorser unknown
		endorse(signingKey("kg", pubX), "k1", privF), // forged endorsement
		signingKey("kn", pubX),                       // no endorsement
		endorse(signingKey("k1", pubX), "k1", priv1), // a trusted id with another key
	}
	added, err := kr.offer(offered, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added, []string{"k2", "k3"}) {
		t.Fatalf("added %v", added)
	}
	kr2, _ := loadKeyring(dir, testLogger(t))
	snap := kr2.snapshot()
	if len(snap) != 3 || !snap["k1"].Equal(pub1) || !snap["k3"].Equal(pub3) {
		t.Fatalf("persisted keys %v", snap)
	}
	// A configuration without k1 does not untrust it.
	if _, err := kr2.offer(offered[1:3], time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok := kr2.snapshot()["k1"]; !ok {
		t.Fatal("k1 dropped")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.json")
	for _, content := range []string{"one", "two"} {
		if err := writeFileAtomic(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if string(b) != content {
			t.Fatalf("content %q", b)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftovers: %v", ents)
	}
}
