package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/server"
	"github.com/backstop-ha/backstop/server/notify"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

const adminSecret = "bsk_test-admin-secret-0123456789"

type env struct {
	t     testing.TB
	url   string
	srv   *server.Server
	st    *store.Store
	dbURL string
	// deliver is the delivery service of newDeliveryEnv (else nil).
	deliver *notify.Service
}

func newEnv(t testing.TB, schema uint) *env {
	t.Helper()
	dbURL := storetest.URL(t)
	st, err := store.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.EnsureBootstrapToken(t.Context(), adminSecret); err != nil {
		t.Fatal(err)
	}
	keys, err := signing.Open(t.Context(), st, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: st, Keyring: keys, Logger: slog.New(slog.DiscardHandler), SchemaVersion: schema})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &env{t: t, url: ts.URL, srv: srv, st: st, dbURL: dbURL}
}

func (e *env) do(method, path string, body any, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	return testkit.Request(e.t, nil, method, e.url+path, adminSecret, body, hdr...)
}

// Concurrent retries with one Idempotency-Key create one cluster: each
// either gets the stored answer or a 409 while the first still runs.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	e := newEnv(t, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	bodies := map[string]bool{}
	for range 6 {
		wg.Go(func() {
			resp, b := e.do("POST", "/v1/clusters", map[string]any{"name": "mail"}, "Idempotency-Key", "create-mail")
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == 201 {
				bodies[string(b)] = true
			}
		})
	}
	wg.Wait()
	if statuses[201] == 0 || statuses[201]+statuses[409] != 6 || len(bodies) != 1 {
		t.Fatalf("statuses %v, %d distinct 201 bodies; want only 201 (one body) and 409", statuses, len(bodies))
	}
	_, b := e.do("GET", "/v1/clusters", nil)
	var list struct{ Items []any }
	if err := json.Unmarshal(b, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("clusters after racing retries: %s", b)
	}
}

// /readyz tells a binary newer than its database apart from a ready one.
func TestReadyz(t *testing.T) {
	latest, err := store.LatestMigration()
	if err != nil {
		t.Fatal(err)
	}
	if resp, b := newEnv(t, latest).do("GET", "/readyz", nil); resp.StatusCode != 200 {
		t.Fatalf("readyz on a migrated database: %d %s", resp.StatusCode, b)
	}
	resp, b := newEnv(t, latest+1).do("GET", "/readyz", nil)
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("readyz with a missing migration: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}

// The JSON decoder of the generated code is never reached by a body the
// contract refuses, and its own errors are problem+json too.
func TestNoTextPlainErrors(t *testing.T) {
	e := newEnv(t, 1)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/clusters", `{"name":"x"`},
		{"POST", "/v1/clusters", `[]`},
		{"GET", "/v1/clusters/not-a-uuid", ``},
		{"GET", "/v1/clusters?limit=-1", ``},
		{"DELETE", "/v1/tokens/x", ``},
	} {
		req, _ := http.NewRequest(tc.method, e.url+tc.path, bytes.NewBufferString(tc.body))
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s %q: %d %s, want 400 problem+json", tc.method, tc.path, tc.body, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

func clusterWithNodes(e *env, n int) (string, []string) {
	e.t.Helper()
	cid := e.addCluster(fmt.Sprintf("c-%p", e), "")
	var nodes []string
	for i := range n {
		resp, b := e.do("POST", "/v1/clusters/"+cid+"/nodes", map[string]any{"name": fmt.Sprintf("n%d", i)})
		if resp.StatusCode != 201 {
			e.t.Fatalf("create node: %d %s", resp.StatusCode, b)
		}
		var nd struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(b, &nd)
		nodes = append(nodes, nd.ID)
	}
	return cid, nodes
}

func mailSpec(name string, nodes []string) map[string]any {
	prios := []map[string]any{}
	for i, n := range nodes {
		prios = append(prios, map[string]any{"node_id": n, "priority": i + 1})
	}
	return map[string]any{
		"name": name,
		"resources": []map[string]any{
			{"name": "vip", "kind": "ip", "params": map[string]any{"address": "198.18.1.50/24", "interface": "eth0"}},
			{"name": "spool", "kind": "volume", "params": map[string]any{"source": "/srv/mail", "target": "/var/spool/postfix"}, "depends_on": []string{"vip"}},
			{"name": "postfix", "kind": "service", "params": map[string]any{"start": "postfix start"}, "depends_on": []string{"spool"}},
		},
		"priorities": prios,
	}
}
