package server_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/server"
	"github.com/backstop-ha/backstop/server/notify"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

// newDeliveryEnv is newEnv with event delivery running: a notify service
// on a pool of its own, as backstopd wires it, with a short retry budget.
func newDeliveryEnv(t testing.TB, cfg notify.Config) *env {
	t.Helper()
	return newDeliveryEnvWith(t, cfg, nil)
}

// newDeliveryEnvWith is newDeliveryEnv with a last say on the server's
// configuration.
func newDeliveryEnvWith(t testing.TB, cfg notify.Config, adjust func(*server.Config)) *env {
	t.Helper()
	dbURL := storetest.URL(t)
	st, err := store.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	dst, err := store.OpenSized(t.Context(), dbURL, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	if _, err := st.EnsureBootstrapToken(t.Context(), adminSecret); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.StartSNMPEngine(t.Context()); err != nil {
		t.Fatal(err)
	}
	keys, err := signing.Open(t.Context(), st, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := notify.NewSealer([]byte("test-secret-key-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pool, cfg.Store, cfg.Sealer, cfg.Logger = dst.Pool(), dst, sealer, slog.New(slog.DiscardHandler)
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 4
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase, cfg.BackoffMax = 100*time.Millisecond, 400*time.Millisecond
	}
	cfg.PollInterval, cfg.AttemptTimeout, cfg.JobTimeout = 100*time.Millisecond, 2*time.Second, 30*time.Second
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	d, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	scfg := server.Config{Store: st, Keyring: keys, Logger: slog.New(slog.DiscardHandler), Deliverer: d, Registry: reg,
		StreamHeartbeat: 200 * time.Millisecond, StreamPoll: time.Second}
	if adjust != nil {
		adjust(&scfg)
	}
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.RegisterOnShutdown(srv.CloseStreams)
	ts.Start()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Run(ctx) })
	wg.Go(func() { srv.RunEvents(ctx) })
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.CloseStreams()
		ts.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = d.Stop(sctx)
		cancel()
		wg.Wait()
	})
	return &env{t: t, url: ts.URL, srv: srv, st: st, dbURL: dbURL, deliver: d}
}

// receiver is a webhook receiver that verifies every request with the
// Standard Webhooks algorithm, written here from the specification (not
// with package notify's code).
type receiver struct {
	t      testing.TB
	secret string
	// answer decides the status of a request (nil: 204).
	answer func(msgID string, n int) int
	// hang makes the receiver answer nothing: each request waits until
	// its sender gives up (or the test ends), as a receiver slower than
	// any attempt timeout would.
	hang bool
	// stop ends hung requests when the test ends.
	stop chan struct{}

	mu    sync.Mutex
	got   []delivered          // verified requests, in arrival order
	at    map[string]time.Time // arrival time by webhook-id
	tries map[string]int
	srv   *httptest.Server
}

type delivered struct {
	ID   string
	Type string
	Data struct {
		Seq       int64     `json:"seq"`
		ClusterID string    `json:"cluster_id"`
		Type      string    `json:"type"`
		At        time.Time `json:"at"`
	}
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{t: t, tries: map[string]int{}, stop: make(chan struct{})}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	t.Cleanup(func() { close(r.stop) }) // before Close, which waits for requests
	return r
}

func verifySignature(secret string, h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	sec, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || id == "" || ts == "" {
		return fmt.Errorf("bad secret or headers: %v %q %q", err, id, ts)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		return fmt.Errorf("webhook-timestamp %q is not now", ts)
	}
	mac := hmac.New(sha256.New, sec)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(sigs) {
		if v, sig, ok := strings.Cut(s, ","); ok && v == "v1" && hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no valid v1 signature in %q", sigs)
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	secret := r.secret
	r.mu.Unlock()
	if err := verifySignature(secret, req.Header, body); err != nil {
		r.t.Errorf("webhook signature: %v", err)
		w.WriteHeader(400)
		return
	}
	var d delivered
	if err := json.Unmarshal(body, &d); err != nil {
		r.t.Errorf("webhook body: %v: %s", err, body)
	}
	d.ID = req.Header.Get("webhook-id")
	r.mu.Lock()
	r.tries[d.ID]++
	n := r.tries[d.ID]
	answer, hang := r.answer, r.hang
	r.mu.Unlock()
	if hang {
		select {
		case <-req.Context().Done():
		case <-r.stop:
		}
		return
	}
	status := 204
	if answer != nil {
		status = answer(d.ID, n)
	}
	if status < 300 {
		r.mu.Lock()
		r.got = append(r.got, d)
		if r.at != nil {
			r.at[d.ID] = time.Now()
		}
		r.mu.Unlock()
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, fmt.Sprintf("answer %d to try %d", status, n))
}

func (r *receiver) received() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivered(nil), r.got...)
}

// subscribe creates a webhook for r and keeps its secret.
func (r *receiver) subscribe(e *env, body map[string]any) string {
	body["url"] = r.srv.URL
	resp, b := e.do("POST", "/v1/webhooks", body)
	if resp.StatusCode != 201 {
		e.t.Fatalf("create webhook: %d %s", resp.StatusCode, b)
	}
	var w struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(b, &w); err != nil || !strings.HasPrefix(w.Secret, "whsec_") {
		e.t.Fatalf("webhook: %v %s", err, b)
	}
	r.mu.Lock()
	r.secret = w.Secret
	r.mu.Unlock()
	return w.ID
}

// maintenance toggles a node's maintenance n times: 2n events.
func maintenance(e *env, cid, nid string, n int) {
	for range n {
		for _, m := range []string{"PUT", "DELETE"} {
			if resp, b := e.do(m, "/v1/clusters/"+cid+"/nodes/"+nid+"/maintenance", nil); resp.StatusCode != 200 {
				e.t.Fatalf("%s maintenance: %d %s", m, resp.StatusCode, b)
			}
		}
	}
}

type eventJSON struct {
	Seq      int64             `json:"seq"`
	ID       string            `json:"id"`
	Type     string            `json:"type"`
	Severity string            `json:"severity"`
	Subject  map[string]string `json:"subject"`
	Details  map[string]any    `json:"details"`
}

func listEvents(e *env, cid, query string) []eventJSON {
	resp, b := e.do("GET", "/v1/clusters/"+cid+"/events?limit=1000"+query, nil)
	if resp.StatusCode != 200 {
		e.t.Fatalf("events: %d %s", resp.StatusCode, b)
	}
	var l struct{ Items []eventJSON }
	if err := json.Unmarshal(b, &l); err != nil {
		e.t.Fatal(err)
	}
	return l.Items
}

// Events reach a subscribed receiver signed, in order, without a gap;
// filters hold back what was not asked for; other receivers are not
// held back by a dead one or one that never answers.
func TestWebhooksOrderedSignedFiltered(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{})
	cid, nodes := clusterWithNodes(e, 2)
	all, onlyEnded, dead := newReceiver(t), newReceiver(t), newReceiver(t)
	all.subscribe(e, map[string]any{"cluster_ids": []string{cid}})
	onlyEnded.subscribe(e, map[string]any{"event_types": []string{"node.maintenance_ended"}})
	dead.answer = func(string, int) int { return 503 }
	dead.subscribe(e, map[string]any{"event_types": []string{"node.*"}})
	slow := newReceiver(t)
	slow.hang = true // past the 2 s attempt timeout, every time
	slow.subscribe(e, map[string]any{})
	maintenance(e, cid, nodes[0], 10)
	// The dead and the slow receiver's deliveries are dead-lettered
	// meanwhile, and each dead letter is an event of the cluster
	// (delivery.dead_lettered), so "all" gets those too, wherever they
	// fall among the maintenance events: count and check the maintenance
	// events, and check that nothing else but delivery events came.
	nodeEvents := func(ds []delivered) []delivered {
		var out []delivered
		for _, d := range ds {
			if strings.HasPrefix(d.Type, "node.") {
				out = append(out, d)
			}
		}
		return out
	}
	// Were deliveries to "all" held back by the slow receiver, whose
	// every attempt takes the 2 s attempt timeout, 20 events would take
	// minutes.
	testkit.Eventually(t, 30*time.Second, "20 maintenance events at the receiver", func() bool { return len(nodeEvents(all.received())) >= 20 })
	received := all.received()
	for i, d := range received {
		if i > 0 && d.Data.Seq != received[i-1].Data.Seq+1 {
			t.Fatalf("event %d has seq %d after %d: out of order or a gap", i, d.Data.Seq, received[i-1].Data.Seq)
		}
		if d.Data.ClusterID != cid || d.Type != d.Data.Type || !strings.HasPrefix(d.Type, "node.") && !strings.HasPrefix(d.Type, "delivery.") {
			t.Errorf("event %d: %+v, want a node or delivery event of cluster %s", i, d, cid)
		}
	}
	got := nodeEvents(received)
	if len(got) != 20 {
		t.Fatalf("%d maintenance events, want 20: %+v", len(got), got)
	}
	for i, d := range got {
		want := "node.maintenance_started"
		if i%2 == 1 {
			want = "node.maintenance_ended"
		}
		if d.Type != want || d.Data.Type != want {
			t.Errorf("maintenance event %d: %+v, want %s", i, d, want)
		}
	}
	testkit.Eventually(t, 10*time.Second, "10 filtered events", func() bool { return len(onlyEnded.received()) == 10 })
	for _, d := range onlyEnded.received() {
		if d.Type != "node.maintenance_ended" {
			t.Errorf("filtered receiver got %s", d.Type)
		}
	}
	// The events' ids are the webhook ids.
	evs := listEvents(e, cid, "&type=node.maintenance_started")
	if len(evs) != 10 || evs[0].ID != got[0].ID {
		t.Errorf("events %+v; first delivered id %s", evs, got[0].ID)
	}
	_, metrics := e.do("GET", "/metrics", nil)
	for _, m := range []string{`backstop_events_total{severity="info",type="node.maintenance_started"} 10`,
		`backstop_delivery_attempts_total{outcome="retry",target_id=`, `backstop_delivery_backlog{target_id=`,
		`backstop_delivery_oldest_pending_seconds{`, `backstop_delivery_lag_seconds_bucket{target_kind="webhook"`} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
}

// Webhook and SNMP target configuration: secrets shown once, validation
// as problem+json, disabling cancels what is pending.
func TestTargetConfiguration(t *testing.T) {
	// A budget no delivery exhausts during the test: what is pending when
	// the webhook is disabled must still be pending, not dead-lettered
	// (a dead letter is one more event, and delivery, to count).
	e := newDeliveryEnv(t, notify.Config{MaxAttempts: 1000})
	for _, tc := range []struct {
		path   string
		body   map[string]any
		status int
		where  string
	}{
		{"/v1/webhooks", map[string]any{"url": "ftp://x"}, 422, "/url"},
		{"/v1/webhooks", map[string]any{"url": "http://x", "event_types": []string{"node.gone"}}, 422, "/event_types/0"},
		{"/v1/webhooks", map[string]any{"url": "http://x", "cluster_ids": []string{"0195f7a4-0000-7000-8000-000000000001"}}, 422, "/cluster_ids/0"},
		{"/v1/webhooks", map[string]any{"url": "http://x", "secret": "mine"}, 400, "/secret"},
		{"/v1/snmp-targets", map[string]any{"host": "h", "snmp_version": "v2c"}, 422, "/community"},
		{"/v1/snmp-targets", map[string]any{"host": "h", "snmp_version": "v3", "community": "c"}, 422, "/v3"},
		{"/v1/snmp-targets", map[string]any{"host": "h", "snmp_version": "v3", "v3": map[string]any{"user": "u", "auth_protocol": "MD5",
			"auth_passphrase": "12345678", "priv_protocol": "AES", "priv_passphrase": "12345678"}}, 400, "/v3/auth_protocol"},
	} {
		resp, b := e.do("POST", tc.path, tc.body)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(b), `"location":"`+tc.where) {
			t.Errorf("POST %s %v: %d %s, want %d naming %s", tc.path, tc.body, resp.StatusCode, b, tc.status, tc.where)
		}
	}
	r := newReceiver(t)
	r.answer = func(string, int) int { return 503 }
	wid := r.subscribe(e, map[string]any{"name": "ops"})
	resp, b := e.do("GET", "/v1/webhooks/"+wid, nil)
	if resp.StatusCode != 200 || strings.Contains(string(b), `"secret"`) || !strings.Contains(string(b), `"secret_prefix":"whsec_`) {
		t.Errorf("GET webhook: %d %s", resp.StatusCode, b)
	}
	cid, nodes := clusterWithNodes(e, 1)
	maintenance(e, cid, nodes[0], 1)
	first := listEvents(e, cid, "")[0].ID
	testkit.Eventually(t, 10*time.Second, "a failed attempt", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.tries[first] > 0
	})
	resp, b = e.do("PATCH", "/v1/webhooks/"+wid, map[string]any{"enabled": false}, "If-Match", `"1"`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"enabled":false`) {
		t.Fatalf("disable: %d %s", resp.StatusCode, b)
	}
	_, b = e.do("GET", "/v1/webhooks/"+wid+"/deliveries?status=cancelled", nil)
	if strings.Count(string(b), `"status":"cancelled"`) != 2 {
		t.Errorf("after disabling, deliveries: %s", b)
	}
	if resp, b := e.do("PATCH", "/v1/webhooks/"+wid, map[string]any{"name": "x"}, "If-Match", `"1"`); resp.StatusCode != 412 {
		t.Errorf("stale If-Match: %d %s", resp.StatusCode, b)
	}

	resp, b = e.do("POST", "/v1/snmp-targets", map[string]any{"host": "127.0.0.1", "port": 9, "snmp_version": "v2c", "community": "public"})
	if resp.StatusCode != 201 || strings.Contains(string(b), "public") || !strings.Contains(string(b), `"min_severity":"critical"`) {
		t.Fatalf("create SNMP target: %d %s", resp.StatusCode, b)
	}
	var snmpTarget struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &snmpTarget)
	// To v3: the v3 settings are needed, and the community goes.
	if resp, b := e.do("PATCH", "/v1/snmp-targets/"+snmpTarget.ID, map[string]any{"snmp_version": "v3"}); resp.StatusCode != 422 {
		t.Errorf("v3 without settings: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("PATCH", "/v1/snmp-targets/"+snmpTarget.ID, map[string]any{"snmp_version": "v3", "v3": map[string]any{"user": "u", "auth_protocol": "SHA",
		"auth_passphrase": "12345678", "priv_protocol": "AES", "priv_passphrase": "abcdefgh"}})
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"v3_user":"u"`) || strings.Contains(string(b), "12345678") {
		t.Errorf("to v3: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("POST", "/v1/snmp-targets/"+snmpTarget.ID+"/test", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"kind":"test"`) {
		t.Errorf("test trap: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", "/v1/snmp-engine", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"engine_id":"80007ed905`) {
		t.Errorf("engine: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.do("DELETE", "/v1/snmp-targets/"+snmpTarget.ID, nil); resp.StatusCode != 204 {
		t.Errorf("delete SNMP target: %d", resp.StatusCode)
	}
	if resp, _ := e.do("DELETE", "/v1/webhooks/"+wid, nil); resp.StatusCode != 204 {
		t.Errorf("delete webhook: %d", resp.StatusCode)
	}
	if resp, _ := e.do("GET", "/v1/webhooks/"+wid+"/deliveries", nil); resp.StatusCode != 404 {
		t.Errorf("deliveries of a deleted webhook: %d", resp.StatusCode)
	}
}

// A receiver that fails three times with 500 gets the event on the
// fourth attempt, once; the delivery log shows every attempt.
func TestWebhookRetriesThenDelivers(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{MaxAttempts: 5})
	cid, nodes := clusterWithNodes(e, 1)
	r := newReceiver(t)
	r.answer = func(_ string, n int) int {
		if n <= 3 {
			return 500
		}
		return 200
	}
	wid := r.subscribe(e, map[string]any{"event_types": []string{"node.maintenance_started"}})
	maintenance(e, cid, nodes[0], 1)
	testkit.Eventually(t, 20*time.Second, "the event after three failures", func() bool { return len(r.received()) == 1 })
	// Once the delivery is recorded as delivered nothing more is sent
	// for it: wait for that rather than for a while.
	testkit.Eventually(t, 10*time.Second, "the delivery recorded as delivered", func() bool {
		_, b := e.do("GET", "/v1/webhooks/"+wid+"/deliveries?status=delivered", nil)
		return strings.Contains(string(b), `"status":"delivered"`)
	})
	r.mu.Lock()
	if got := r.got; len(got) != 1 || r.tries[got[0].ID] != 4 {
		t.Fatalf("received %+v after tries %v; want one event on the 4th try", got, r.tries)
	}
	r.mu.Unlock()
	resp, b := e.do("GET", "/v1/webhooks/"+wid+"/deliveries", nil)
	var l struct {
		Items []struct {
			ID         string `json:"id"`
			Status     string `json:"status"`
			Attempts   int    `json:"attempts"`
			AttemptLog []struct {
				N               int     `json:"n"`
				StatusCode      int     `json:"status_code"`
				Outcome         string  `json:"outcome"`
				LatencyMs       float64 `json:"latency_ms"`
				ResponseExcerpt string  `json:"response_excerpt"`
			} `json:"attempt_log"`
		}
	}
	if err := json.Unmarshal(b, &l); err != nil || resp.StatusCode != 200 || len(l.Items) != 1 {
		t.Fatalf("deliveries: %d %s", resp.StatusCode, b)
	}
	d := l.Items[0]
	if d.Status != "delivered" || d.Attempts != 4 || len(d.AttemptLog) != 4 {
		t.Fatalf("delivery %+v", d)
	}
	for i, a := range d.AttemptLog {
		wantCode, wantOutcome := 500, "retry"
		if i == 3 {
			wantCode, wantOutcome = 200, "delivered"
		}
		if a.N != i+1 || a.StatusCode != wantCode || a.Outcome != wantOutcome || a.LatencyMs <= 0 ||
			a.ResponseExcerpt != fmt.Sprintf("answer %d to try %d", wantCode, i+1) {
			t.Errorf("attempt %d: %+v", i+1, a)
		}
	}
	// Redelivery sends the same event (same webhook-id) once more.
	resp, b = e.do("POST", "/v1/webhooks/"+wid+"/deliveries/"+d.ID+"/redeliver", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("redeliver: %d %s", resp.StatusCode, b)
	}
	testkit.Eventually(t, 10*time.Second, "the redelivery", func() bool { return len(r.received()) == 2 })
	if got := r.received(); got[1].ID != got[0].ID {
		t.Errorf("redelivery has webhook-id %s, want %s", got[1].ID, got[0].ID)
	}
}

// A receiver that answers 410 is not retried; one that stays down
// exhausts the budget. Both deliveries are dead-lettered with an event,
// and later events still get through.
func TestWebhookDeadLetters(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{MaxAttempts: 3})
	cid, nodes := clusterWithNodes(e, 1)
	gone, down := newReceiver(t), newReceiver(t)
	gone.answer = func(string, int) int { return 410 }
	down.answer = func(string, int) int { return 503 }
	goneID := gone.subscribe(e, map[string]any{"event_types": []string{"node.maintenance_started"}})
	downID := down.subscribe(e, map[string]any{"event_types": []string{"node.maintenance_started"}})
	maintenance(e, cid, nodes[0], 1)
	testkit.Eventually(t, 20*time.Second, "two dead letters", func() bool { return len(listEvents(e, cid, "&type=delivery.dead_lettered")) == 2 })
	byTarget := map[string]eventJSON{}
	for _, ev := range listEvents(e, cid, "&type=delivery.dead_lettered") {
		byTarget[ev.Subject["target_id"]] = ev
	}
	if ev := byTarget[goneID]; ev.Details["attempts"] != float64(1) || ev.Severity != "warning" {
		t.Errorf("410 receiver: %+v, want 1 attempt", ev)
	}
	if ev := byTarget[downID]; ev.Details["attempts"] != float64(3) {
		t.Errorf("down receiver: %+v, want 3 attempts", ev)
	}
	gone.mu.Lock()
	if n := len(gone.tries); n != 1 {
		t.Errorf("410 receiver tried for %d events", n)
	}
	for _, n := range gone.tries {
		if n != 1 {
			t.Errorf("410 receiver tried %d times", n)
		}
	}
	gone.mu.Unlock()
	// The receiver comes back: the next event is delivered.
	down.mu.Lock()
	down.answer = nil
	down.mu.Unlock()
	maintenance(e, cid, nodes[0], 1)
	testkit.Eventually(t, 10*time.Second, "the next event", func() bool { return len(down.received()) == 1 })
	resp, b := e.do("GET", "/v1/webhooks/"+downID+"/deliveries?status=dead_lettered", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"dead_lettered"`) {
		t.Errorf("dead-lettered deliveries: %d %s", resp.StatusCode, b)
	}
	// Ping: sent now, recorded.
	resp, b = e.do("POST", "/v1/webhooks/"+downID+"/ping", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"kind":"ping"`) || !strings.Contains(string(b), `"status":"delivered"`) {
		t.Errorf("ping: %d %s", resp.StatusCode, b)
	}
}

// sseEvent is one message of the event stream.
type sseEvent struct {
	ID   string
	Data eventJSON
}

// readStream reads n events from the stream (after Last-Event-ID
// lastID, "" for none).
func readStream(t *testing.T, e *env, cid, lastID string, n int) []sseEvent {
	t.Helper()
	out, err := streamEvents(t.Context(), e, cid, lastID, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// streamEvents is readStream for any goroutine: it returns its failure
// instead of calling t.Fatal, which must run on the test's goroutine
// (elsewhere it would end that goroutine and leave the test waiting).
// It sends each event on progress too, if not nil (buffer n).
func streamEvents(ctx context.Context, e *env, cid, lastID string, n int, progress chan<- sseEvent) ([]sseEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/clusters/"+cid+"/events/stream", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.Data); err != nil {
				return out, fmt.Errorf("event data %q: %w", line, err)
			}
		case line == "" && cur.ID != "":
			out = append(out, cur)
			if progress != nil {
				progress <- cur
			}
			cur = sseEvent{}
		}
	}
	if len(out) < n {
		return out, fmt.Errorf("stream ended after %d of %d events: %v", len(out), n, sc.Err())
	}
	return out, nil
}

// A client that disconnects and reconnects with Last-Event-ID misses
// nothing and gets nothing twice, including events written while it was
// away and events pushed live.
func TestEventStreamResumes(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{})
	cid, nodes := clusterWithNodes(e, 1)
	maintenance(e, cid, nodes[0], 2) // 4 events
	first := readStream(t, e, cid, "", 3)
	maintenance(e, cid, nodes[0], 1) // 2 more while away
	type result struct {
		events []sseEvent
		err    error
	}
	done := make(chan result, 1)
	progress := make(chan sseEvent, 5)
	go func() {
		evs, err := streamEvents(t.Context(), e, cid, first[2].ID, 5, progress)
		done <- result{evs, err}
	}()
	// The stream is connected once it has sent the three events written
	// before it (the one not read, and the two while away): the next two
	// are pushed live.
	for range 3 {
		select {
		case <-progress:
		case r := <-done:
			t.Fatalf("stream ended before the live events: %v", r.err)
		}
	}
	maintenance(e, cid, nodes[0], 1) // 2 more, live
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	all := append(first, r.events...)
	for i, ev := range all {
		if ev.ID != strconv.FormatInt(ev.Data.Seq, 10) || ev.Data.Seq != int64(i+1) {
			t.Fatalf("stream event %d: id %s seq %d, want %d", i, ev.ID, ev.Data.Seq, i+1)
		}
	}
}
