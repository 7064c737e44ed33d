package envelope

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

var (
	now     = time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	seed    = make([]byte, ed25519.SeedSize)
	key     = ed25519.NewKeyFromSeed(seed)
	other   = ed25519.NewKeyFromSeed(append(make([]byte, ed25519.SeedSize-1), 1))
	trusted = map[string]ed25519.PublicKey{"k1": key.Public().(ed25519.PublicKey)}
)

type memory struct {
	seen        map[string]bool
	epoch, term int64
}

func (m *memory) Seen(id string) bool               { return m.seen[id] }
func (m *memory) Newest(string) (epoch, term int64) { return m.epoch, m.term }
func newVerifier(m *memory) *Verifier {
	return &Verifier{ClusterID: "c1", NodeID: "n1", Keys: trusted, Memory: m, Now: func() time.Time { return now }}
}

func command() Command {
	return Command{
		ID: "cmd1", ClusterID: "c1", NodeID: "n1", HierarchyID: "h1", Hierarchy: "mail",
		Epoch: 5, Term: 2, IssuedAt: now.Add(-time.Second), ExpiresAt: now.Add(30 * time.Second),
		Action:    BringInService,
		Resources: []backstop.Resource{{Name: "vip", Kind: "ip", Params: map[string]any{"address": "198.18.1.50/24", "interface": "eth0"}}},
	}
}

func sign(t testing.TB, c Command, k ed25519.PrivateKey) Envelope {
	e, err := Sign(c, "k1", k)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVerify(t *testing.T) {
	valid := sign(t, command(), key)
	cases := []struct {
		name string
		env  func() Envelope
		mem  memory
		want Reason
	}{
		{"valid", func() Envelope { return valid }, memory{}, ""},
		{"same epoch later command", func() Envelope { return valid }, memory{epoch: 5, term: 2}, ""},
		{"unknown key", func() Envelope { e := valid; e.KeyID = "k9"; return e }, memory{}, ReasonUnknownKey},
		{"forged by another key", func() Envelope { return sign(t, command(), other) }, memory{}, ReasonBadSignature},
		{"tampered payload", func() Envelope {
			e := valid
			e.Payload = []byte(string(e.Payload[:len(e.Payload)-2]) + " }")
			return e
		}, memory{}, ReasonBadSignature},
		{"epoch raised after signing", func() Envelope {
			var c Command
			_ = json.Unmarshal(valid.Payload, &c)
			c.Epoch = 99
			b, _ := json.Marshal(c)
			e := valid
			e.Payload = b
			return e
		}, memory{}, ReasonBadSignature},
		{"truncated signature", func() Envelope { e := valid; e.Signature = e.Signature[:10]; return e }, memory{}, ReasonBadSignature},
		{"malformed payload", func() Envelope {
			p := []byte("not json")
			return Envelope{Payload: p, KeyID: "k1", Signature: ed25519.Sign(key, signedBytes(p))}
		}, memory{}, ReasonMalformed},
		{"unknown action", func() Envelope { c := command(); c.Action = "format_disk"; return sign(t, c, key) }, memory{}, ReasonMalformed},
		{"other node", func() Envelope { c := command(); c.NodeID = "n2"; return sign(t, c, key) }, memory{}, ReasonWrongNode},
		{"other cluster", func() Envelope { c := command(); c.ClusterID = "c2"; return sign(t, c, key) }, memory{}, ReasonWrongCluster},
		{"expired", func() Envelope { c := command(); c.ExpiresAt = now; return sign(t, c, key) }, memory{}, ReasonExpired},
		{"replay", func() Envelope { return valid }, memory{seen: map[string]bool{"cmd1": true}}, ReasonReplay},
		{"stale epoch", func() Envelope { return valid }, memory{epoch: 6, term: 2}, ReasonStaleEpoch},
		{"stale term", func() Envelope { return valid }, memory{epoch: 5, term: 3}, ReasonStaleTerm},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.mem
			c, err := newVerifier(&m).Verify(tc.env())
			if got := ReasonOf(err); got != tc.want || (tc.want == "" && err != nil) {
				t.Fatalf("Verify: %v (reason %q), want reason %q", err, got, tc.want)
			}
			if tc.want == "" && (c == nil || c.ID != "cmd1" || c.Resources[0].Params["address"] != "198.18.1.50/24") {
				t.Fatalf("verified command = %+v", c)
			}
		})
	}
}

// FuzzVerify: no input makes Verify panic, and nothing but an untouched
// envelope signed by the trusted key is ever accepted.
func FuzzVerify(f *testing.F) {
	valid := sign(f, command(), key)
	f.Add(valid.Payload, valid.Signature, valid.KeyID)
	f.Add(valid.Payload, sign(f, command(), other).Signature, "k1")
	f.Add([]byte(`{"id":"x"}`), valid.Signature, "k1")
	f.Add([]byte{}, []byte{}, "")
	f.Fuzz(func(t *testing.T, payload, sig []byte, keyID string) {
		c, err := newVerifier(&memory{}).Verify(Envelope{Payload: payload, KeyID: keyID, Signature: sig})
		if err == nil {
			if keyID != "k1" || !ed25519.Verify(key.Public().(ed25519.PublicKey), signedBytes(payload), sig) {
				t.Fatalf("accepted an envelope the trusted key did not sign: %+v", c)
			}
		} else if ReasonOf(err) == "" {
			t.Fatalf("rejection without a reason: %v", err)
		}
	})
}
