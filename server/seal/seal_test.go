package seal

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// compatSecret is the operator secret the vectors below were sealed under.
const compatSecret = "backstop-compat-test-secret-0001"

// TestOpensValuesSealedBefore opens values sealed by the code this package
// replaced: notify.Sealer (webhook and SNMP target secrets, fence-device
// secrets) and signing.Keyring.seal (command-signing key seeds). Each had
// its own AES-GCM code; the values were captured from it with the secret
// above (and its random nonces). If this fails, databases written by
// earlier versions no longer open.
func TestOpensValuesSealedBefore(t *testing.T) {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	for _, tc := range []struct {
		name, label, id, sealed string
		plain                   []byte
	}{
		{
			name: "target secret (notify.Sealer)", label: LabelDelivery,
			id:     "0190a4b2-0000-7000-8000-0000000000aa",
			sealed: "2af5d81b54842c1f45edbae30502ad2789a6c5bc3e03f436b8560ac7c91d47c471a818966819b64c4ff9ada49b1c898b2eab37",
			plain:  []byte("whsec-compat-0123456789"),
		},
		{
			name: "fence-device secret (notify.Sealer)", label: LabelDelivery,
			id:     "fence-device/0190a4b2-0000-7000-8000-0000000000bb",
			sealed: "f4b18a331253fe87f04090cc2a4a92c34330e99c28dcc8d4929179cc8394bc7fa8100d5a81888903f23ccb0af7b55c4f2abd",
			plain:  []byte(`{"password":"hunter2"}`),
		},
		{
			name: "signing key seed (signing.Keyring)", label: LabelSigningKeys,
			id:     "k-0190a4b2-0000",
			sealed: "8a52decae6651e65ce597e20461bf837988a114151469d6b9245dd4f474e4f4aefc846579debfdafcfee8be47ea92c659b3c7ffd2c925437edf7902a",
			plain:  seed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := DeriveKey(tc.label, []byte(compatSecret))
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(key, "test")
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := hex.DecodeString(tc.sealed)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Open(tc.id, sealed)
			if err != nil || !bytes.Equal(got, tc.plain) {
				t.Fatalf("Open = %q, %v; want %q", got, err, tc.plain)
			}
			// And what Seal writes today has the same shape: nonce,
			// ciphertext, tag.
			if n := len(s.Seal(tc.id, tc.plain)); n != len(sealed) {
				t.Errorf("Seal wrote %d bytes; earlier code wrote %d", n, len(sealed))
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	newSealer := func(label, secret string) *Sealer {
		t.Helper()
		key, err := DeriveKey(label, []byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(key, "secret of target")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := newSealer(LabelDelivery, "0123456789abcdef-a")
	sealed := a.Seal("t1", []byte("whsec_x"))
	if p, err := a.Open("t1", sealed); err != nil || string(p) != "whsec_x" {
		t.Fatalf("Open = %q, %v", p, err)
	}
	if bytes.Equal(sealed, a.Seal("t1", []byte("whsec_x"))) {
		t.Error("two seals of the same value are equal: the nonce is not random")
	}
	for name, open := range map[string]func() ([]byte, error){
		"another id":     func() ([]byte, error) { return a.Open("t2", sealed) },
		"another secret": func() ([]byte, error) { return newSealer(LabelDelivery, "0123456789abcdef-b").Open("t1", sealed) },
		"another label":  func() ([]byte, error) { return newSealer(LabelSigningKeys, "0123456789abcdef-a").Open("t1", sealed) },
		"altered": func() ([]byte, error) {
			c := bytes.Clone(sealed)
			c[len(c)-1] ^= 1
			return a.Open("t1", c)
		},
	} {
		if _, err := open(); !errors.Is(err, ErrCannotOpen) {
			t.Errorf("%s: Open err = %v, want ErrCannotOpen", name, err)
		} else if want := "secret of target t"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: error %q does not start with %q", name, err, want)
		}
	}
	if _, err := a.Open("t1", sealed[:5]); err == nil {
		t.Error("Open of a truncated value succeeded")
	}
}

func TestDeriveKey(t *testing.T) {
	if _, err := DeriveKey(LabelDelivery, []byte("short")); !errors.Is(err, ErrShortSecret) {
		t.Errorf("short secret: %v", err)
	}
	if _, err := New(make([]byte, 16), "x"); err == nil {
		t.Error("New accepted a 16-byte key")
	}
}
