package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/server/failover"
	"github.com/backstop-ha/backstop/server/leader"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
)

// fakeAgent speaks the agent protocol over HTTP: it heartbeats with the
// path reports the test sets, and answers every command with success. It
// stands in for backstop-agent in this test of the engine; the e2e tests
// run the real one.
type fakeAgent struct {
	e      *env
	id     string
	cred   string
	alive  atomic.Bool
	mu     sync.Mutex
	seen   map[string]string // peer node id -> "up"/"down"
	placed map[string]int64  // hierarchy -> epoch in service here
}

func (a *fakeAgent) setPeers(m map[string]string) {
	a.mu.Lock()
	a.seen = m
	a.mu.Unlock()
}

func (a *fakeAgent) run(ctx context.Context) {
	go func() {
		for ctx.Err() == nil {
			if a.alive.Load() {
				a.mu.Lock()
				var paths []map[string]any
				for peer, state := range a.seen {
					paths = append(paths, map[string]any{"path_id": peer, "peer_node_id": peer, "state": state})
				}
				a.mu.Unlock()
				a.e.agentDo(a.cred, "POST", "/agent/v1/heartbeat", map[string]any{"config_version": 0, "paths": paths})
			}
			time.Sleep(40 * time.Millisecond)
		}
	}()
	go func() {
		for ctx.Err() == nil {
			if !a.alive.Load() {
				time.Sleep(40 * time.Millisecond)
				continue
			}
			_, b := a.e.agentDo(a.cred, "GET", "/agent/v1/commands?wait=500", nil)
			var p struct {
				Commands []struct {
					CommandID string `json:"command_id"`
				} `json:"commands"`
			}
			_ = json.Unmarshal(b, &p)
			for _, c := range p.Commands {
				a.e.agentDo(a.cred, "POST", "/agent/v1/commands/"+c.CommandID+"/result", map[string]any{"status": "succeeded"})
			}
		}
	}()
}

// The engine on a leader: a node whose agent stops heartbeating while its
// peers see it too is down, and its hierarchy fails over to priority 2
// with an incident and events; a node whose peers still see it is
// unreachable and nothing moves.
func TestEngineFailover(t *testing.T) {
	e := newEnv(t, 1)
	st, err := store.Open(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := signing.Open(t.Context(), st, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	eng := &failover.Engine{Store: st, Sign: keys.Sign, Log: log, Interval: 20 * time.Millisecond}
	el := leader.New(leader.Config{Store: leader.FromStore[*store.LeaderSession](st), ReplicaID: "test", Address: "x", Logger: log, Interval: 100 * time.Millisecond, Lead: eng.Run})
	var wg sync.WaitGroup
	wg.Go(func() { el.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	cid := e.addCluster("fast", "fast")
	var agents []*fakeAgent
	var ids []string
	for _, name := range []string{"n1", "n2", "n3"} {
		id, token := e.addNode(cid, name)
		en := e.enroll(token)
		a := &fakeAgent{e: e, id: id, cred: en.Credential}
		a.alive.Store(true)
		agents, ids = append(agents, a), append(ids, id)
	}
	for _, a := range agents {
		m := map[string]string{}
		for _, id := range ids {
			if id != a.id {
				m[id] = "up"
			}
		}
		a.setPeers(m)
		a.run(ctx)
	}
	_, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", mailSpec("mail", ids))
	var h struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &h)
	hpath := "/v1/clusters/" + cid + "/hierarchies/" + h.ID
	if resp, b := e.do("POST", hpath+"/in-service", map[string]any{"node_id": ids[0]}); resp.StatusCode != 202 {
		t.Fatalf("in-service: %d %s", resp.StatusCode, b)
	}
	placement := func() (string, string) {
		_, b := e.do("GET", hpath, nil)
		var x struct {
			Placement struct {
				NodeID string `json:"node_id"`
				State  string `json:"state"`
			} `json:"placement"`
		}
		_ = json.Unmarshal(b, &x)
		return x.Placement.NodeID, x.Placement.State
	}
	testkit.Eventually(t, 30*time.Second, "in service on n1", func() bool {
		n, s := placement()
		return n == ids[0] && s == "in_service"
	})

	// n2 goes silent but n3 still sees it: unreachable, nothing moves.
	agents[1].alive.Store(false)
	testkit.Eventually(t, 30*time.Second, "n2 unreachable", func() bool {
		_, b := e.do("GET", "/v1/clusters/"+cid+"/nodes/"+ids[1], nil)
		return strings.Contains(string(b), `"state":"unreachable"`)
	})
	// n1 goes silent and its peers lose it: down, failover. n2 is not up,
	// so priority 3 takes it (cascade).
	agents[0].alive.Store(false)
	for _, a := range agents[1:] {
		a.setPeers(map[string]string{ids[0]: "down", ids[1]: "up", ids[2]: "up"})
	}
	testkit.Eventually(t, 30*time.Second, "failover to n3", func() bool {
		n, s := placement()
		return n == ids[2] && s == "in_service"
	})
	if n, _ := placement(); n != ids[2] {
		t.Fatalf("placed on %s after the failover", n)
	}
	_, b = e.do("GET", "/v1/clusters/"+cid+"/incidents", nil)
	if !strings.Contains(string(b), `"kind":"failover"`) || !strings.Contains(string(b), `"state":"resolved"`) || !strings.Contains(string(b), `"recovery_ms"`) {
		t.Fatalf("incidents: %s", b)
	}
	_, b = e.do("GET", "/v1/clusters/"+cid+"/events", nil)
	for _, typ := range []string{"node.unreachable", "node.down", "failover.started", "failover.completed"} {
		if !strings.Contains(string(b), `"type":"`+typ+`"`) {
			t.Errorf("no %s event in %s", typ, b)
		}
	}
	_, b = e.do("GET", hpath+"/explain", nil)
	if !strings.Contains(string(b), `"kind":"failover"`) || !strings.Contains(string(b), "node is unreachable") {
		t.Fatalf("explain: %s", b)
	}
	_, b = e.do("GET", "/v1/control-plane", nil)
	if !strings.Contains(string(b), `"leader":true`) {
		t.Fatalf("control plane: %s", b)
	}
}
