package nodeagent

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/openapi/envelope"
)

const (
	testCluster = "0195f7a4-0000-7000-8000-000000000001"
	testNode    = "0195f7a4-1111-7000-8000-000000000001"
	testPeer    = "0195f7a4-1111-7000-8000-000000000002"
)

func signedCommand(t *testing.T, key ed25519.PrivateKey, keyID string, c envelope.Command) envelope.Envelope {
	t.Helper()
	e, err := envelope.Sign(c, keyID, key)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func baseCommand(id string, epoch, term int64) envelope.Command {
	return envelope.Command{ID: id, ClusterID: testCluster, NodeID: testNode, HierarchyID: hid1, Hierarchy: "mail",
		Epoch: epoch, Term: term, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute), Action: envelope.BringInService}
}

// TestMemorySurvivesRestart runs the verifier over a memory that is
// reloaded from disk between commands, as a restarted agent would.
func TestMemorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(nil)
	verify := func(c envelope.Command) (envelope.Reason, *memory) {
		t.Helper()
		m, err := loadMemory(dir)
		if err != nil {
			t.Fatal(err)
		}
		v := envelope.Verifier{ClusterID: testCluster, NodeID: testNode, Keys: map[string]ed25519.PublicKey{"k1": pub}, Memory: m}
		cmd, err := v.Verify(signedCommand(t, priv, "k1", c))
		if err != nil {
			return envelope.ReasonOf(err), m
		}
		if err := m.Record(cmd); err != nil {
			t.Fatal(err)
		}
		return "", m
	}
	if r, _ := verify(baseCommand("a", 5, 2)); r != "" {
		t.Fatalf("first command rejected: %s", r)
	}
	for _, tc := range []struct {
		name string
		c    envelope.Command
		want envelope.Reason
	}{
		{"replay", baseCommand("a", 5, 2), envelope.ReasonReplay},
		{"stale epoch", baseCommand("b", 4, 2), envelope.ReasonStaleEpoch},
		{"stale term", baseCommand("c", 6, 1), envelope.ReasonStaleTerm},
		{"same epoch, new id", baseCommand("d", 5, 2), ""},
		{"newer epoch", baseCommand("e", 6, 3), ""},
		{"term raised by the previous command", baseCommand("f", 7, 2), envelope.ReasonStaleTerm},
	} {
		if got, _ := verify(tc.c); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	m, _ := loadMemory(dir)
	if raised, err := m.observeTerm(9); err != nil || !raised {
		t.Fatalf("observeTerm: %v %v", raised, err)
	}
	if raised, _ := m.observeTerm(8); raised {
		t.Fatal("a lower term raised the term")
	}
	if r, _ := verify(baseCommand("g", 8, 8)); r != envelope.ReasonStaleTerm {
		t.Fatalf("term from a heartbeat answer not remembered: %q", r)
	}
	fi, err := os.Stat(filepath.Join(dir, fileMemory))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("memory file: %v %v", fi, err)
	}
}

func TestMemoryPruning(t *testing.T) {
	dir := t.TempDir()
	m, _ := loadMemory(dir)
	m.keep = 3
	now := time.Now()
	m.now = func() time.Time { return now }
	for i := range 6 {
		exp := now.Add(-time.Second) // expired
		if i == 1 {
			exp = now.Add(time.Hour) // still valid: kept whatever its age
		}
		c := baseCommand(fmt.Sprint("id", i), 1, 1)
		c.ExpiresAt = exp
		if err := m.Record(&c); err != nil {
			t.Fatal(err)
		}
	}
	m2, err := loadMemory(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true, false, true, true, true} {
		if got := m2.Seen(fmt.Sprint("id", i)); got != want {
			t.Errorf("id%d: seen %v, want %v", i, got, want)
		}
	}
	c := baseCommand("id5", 1, 1)
	if err := m2.Record(&c); err == nil {
		t.Fatal("recording an id twice succeeded")
	}
}
