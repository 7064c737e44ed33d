package signing_test

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

// The first start creates one key; the database holds it only sealed; a
// different secret key cannot open it; rotation keeps old commands
// verifiable and endorses the new key.
func TestKeyring(t *testing.T) {
	st := storetest.New(t)
	secret, _ := signing.SecretKeyFromBytes([]byte("correct horse battery staple"))
	k, err := signing.Open(t.Context(), st, secret)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := st.ListSigningKeys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys after first start: %d %v", len(keys), err)
	}
	if bytes.Contains(keys[0].PrivateSealed, keys[0].PublicKey) || len(keys[0].PrivateSealed) < 32+16 {
		t.Fatal("the stored private key does not look sealed")
	}
	if k.Fingerprint() != envelope.Fingerprint(keys[0].PublicKey) {
		t.Fatal("fingerprint does not match the stored key")
	}
	wrong, _ := signing.SecretKeyFromBytes([]byte("another secret of enough length"))
	if _, err := signing.Open(t.Context(), st, wrong); err == nil || !strings.Contains(err.Error(), "cannot be unsealed") {
		t.Fatalf("open with a wrong secret: %v", err)
	}
	if _, err := signing.SecretKeyFromBytes([]byte("short")); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}

	spec := backstop.CommandSpec{ID: "c1", ClusterID: "cl", NodeID: "n1", HierarchyID: "h1", Epoch: 1, Term: 1, Action: "bring_in_service"}
	sc, _, _, err := k.Sign(spec)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := k.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	old := ed25519.PublicKey(keys[0].PublicKey)
	if nk.EndorsedBy != keys[0].KeyID || !ed25519.Verify(old, envelope.EndorsementBytes(nk.KeyID, nk.PublicKey), nk.Endorsement) {
		t.Fatal("the rotated key is not endorsed by the previous one")
	}
	trusted := map[string]ed25519.PublicKey{keys[0].KeyID: old, nk.KeyID: nk.PublicKey}
	v := &envelope.Verifier{ClusterID: "cl", NodeID: "n1", Keys: trusted}
	if _, err := v.Verify(envelope.Envelope{Payload: sc.Payload, KeyID: sc.KeyID, Signature: sc.Signature}); err != nil {
		t.Fatalf("a command signed before rotation: %v", err)
	}
	spec.ID = "c2"
	sc2, _, _, err := k.Sign(spec)
	if err != nil || sc2.KeyID != nk.KeyID {
		t.Fatalf("after rotation, signed with %s (%v), want %s", sc2.KeyID, err, nk.KeyID)
	}
	if _, err := v.Verify(envelope.Envelope{Payload: sc2.Payload, KeyID: sc2.KeyID, Signature: sc2.Signature}); err != nil {
		t.Fatalf("a command signed after rotation: %v", err)
	}
}
