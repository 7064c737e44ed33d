package e2e

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
)

// TestAgentRejectsBadCommands puts forged, replayed, expired, misaddressed
// and stale-epoch commands in a real agent's queue, as an attacker with
// write access to the database could (the test knows the seal secret, so it
// can sign with the real key where the attack needs it). The agent refuses
// each, the reason shows through the API, and the hierarchy it runs is
// untouched.
func TestAgentRejectsBadCommands(t *testing.T) {
	nc := newNSCluster(t, 2, "lan", 1)
	h := nc.createHierarchy("mail", 0, []int{0, 1}, nil)
	r := nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/"+h+"/in-service", map[string]any{"node_id": nc.nodes[0]}).must(t, 202)
	if op := nc.operation(r.header.Get("Location"), 60*time.Second); op["state"] != "succeeded" {
		t.Fatalf("in-service: %v", op)
	}
	vip := nc.top.vip(0)
	st, err := store.Open(t.Context(), nc.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seal, _ := signing.SecretKeyFromBytes([]byte(sealSecret))
	keys, err := signing.Open(t.Context(), st, seal)
	if err != nil {
		t.Fatal(err)
	}
	pool := st.Pool()
	var real struct {
		payload, sig []byte
		keyID        string
	}
	if err := pool.QueryRow(t.Context(), `SELECT payload, signature, key_id FROM commands WHERE status = 'succeeded' LIMIT 1`).Scan(&real.payload, &real.sig, &real.keyID); err != nil {
		t.Fatal(err)
	}
	base := func() envelope.Command {
		now := time.Now().UTC()
		return envelope.Command{ID: uuid.Must(uuid.NewV7()).String(), ClusterID: nc.id, NodeID: nc.nodes[0], HierarchyID: h, Hierarchy: "mail",
			Epoch: 5, Term: 99, IssuedAt: now, ExpiresAt: now.Add(30 * time.Second), Action: envelope.TakeOutOfService}
	}
	_, forger, _ := ed25519.GenerateKey(nil)
	cases := []struct {
		name   string
		reason envelope.Reason
		env    func() envelope.Envelope
	}{
		{"forged", envelope.ReasonBadSignature, func() envelope.Envelope {
			e, _ := envelope.Sign(base(), real.keyID, forger)
			return e
		}},
		{"unknown key", envelope.ReasonUnknownKey, func() envelope.Envelope {
			e, _ := envelope.Sign(base(), "k-unknown", forger)
			return e
		}},
		{"replayed", envelope.ReasonReplay, func() envelope.Envelope {
			return envelope.Envelope{Payload: real.payload, KeyID: real.keyID, Signature: real.sig}
		}},
		{"expired", envelope.ReasonExpired, func() envelope.Envelope {
			c := base()
			c.IssuedAt, c.ExpiresAt = c.IssuedAt.Add(-time.Minute), c.IssuedAt.Add(-30*time.Second)
			e, _ := keys.SignEnvelope(c)
			return e
		}},
		{"misaddressed", envelope.ReasonWrongNode, func() envelope.Envelope {
			c := base()
			c.NodeID = nc.nodes[1]
			e, _ := keys.SignEnvelope(c)
			return e
		}},
		{"stale epoch", envelope.ReasonStaleEpoch, func() envelope.Envelope {
			c := base()
			c.Epoch = 0
			e, _ := keys.SignEnvelope(c)
			return e
		}},
	}
	ids := map[string]envelope.Reason{}
	for _, tc := range cases {
		e := tc.env()
		id := uuid.Must(uuid.NewV7()).String()
		ids[id] = tc.reason
		// epoch 0 on the row: whatever the agent answers, no placement
		// changes because of these rows.
		if _, err := pool.Exec(t.Context(), `INSERT INTO commands (id, cluster_id, node_id, hierarchy_id, action, epoch, term, key_id, payload, signature, issued_at, expires_at)
			VALUES ($1, $2, $3, $4, 'take_out_of_service', 0, 0, $5, $6, $7, now(), now() + interval '1 minute')`,
			id, nc.id, nc.nodes[0], h, e.KeyID, e.Payload, e.Signature); err != nil {
			t.Fatalf("%s: queue: %v", tc.name, err)
		}
	}
	if _, err := pool.Exec(t.Context(), `SELECT pg_notify($1, $2)`, store.CommandNotifyChannel, nc.nodes[0]); err != nil {
		t.Fatal(err)
	}
	// The replay an attacker can really stage: requeue a command the agent
	// already ran (same id, same signed bytes).
	var realID string
	if err := pool.QueryRow(t.Context(), `UPDATE commands SET status = 'queued' WHERE id = (SELECT id FROM commands WHERE status = 'succeeded' ORDER BY issued_at LIMIT 1) RETURNING id`).Scan(&realID); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `SELECT pg_notify($1, $2)`, store.CommandNotifyChannel, nc.nodes[0]); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the requeued command refused as a replay", func() bool {
		var l struct {
			Items []struct {
				ID     string `json:"id"`
				Reason string `json:"rejection_reason"`
			} `json:"items"`
		}
		nc.c.do(t, "GET", "/v1/clusters/"+nc.id+"/commands?node_id="+nc.nodes[0]+"&limit=100", nil).must(t, 200).decode(t, &l)
		for _, c := range l.Items {
			if c.ID == realID && c.Reason == string(envelope.ReasonReplay) {
				return true
			}
		}
		return false
	})
	var got map[string]string
	testkit.Eventually(t, 30*time.Second, "every crafted command rejected", func() bool {
		var l struct {
			Items []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
				Reason string `json:"rejection_reason"`
			} `json:"items"`
		}
		nc.c.do(t, "GET", "/v1/clusters/"+nc.id+"/commands?node_id="+nc.nodes[0]+"&limit=100", nil).must(t, 200).decode(t, &l)
		got = map[string]string{}
		for _, c := range l.Items {
			if _, ok := ids[c.ID]; ok && c.Status == backstop.CommandRejected {
				got[c.ID] = c.Reason
			}
		}
		return len(got) == len(ids)
	})
	for _, tc := range cases {
		for id, want := range ids {
			if want == tc.reason && got[id] != string(want) {
				t.Errorf("%s: rejection reason %q, want %q", tc.name, got[id], want)
			}
		}
	}
	if p := nc.placement(h); p.State != "in_service" || p.NodeID != nc.nodes[0] {
		t.Errorf("placement after the rejections: %+v", p)
	}
	if g := greeting(vip, 7000); g != "hello from "+nc.top.nodes[0].ns {
		t.Errorf("the service answers %q after the rejections", g)
	}
}
