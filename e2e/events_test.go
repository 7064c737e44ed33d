package e2e

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// Event delivery, end to end: the built backstopd, a real PostgreSQL,
// webhook receivers in the test, and net-snmp's snmptrapd.
//
// The events come from the API (a node's maintenance on and off writes
// node.maintenance_started and node.maintenance_ended in the same
// transaction as the change); the node-crash variant follows with the
// agent's end-to-end tests.

// fastRetry is a short retry budget for the tests: 4 attempts, 0.2 s,
// 0.4 s, 0.8 s apart (half of each random).
var fastRetry = []string{"--delivery-max-attempts", "4", "--delivery-backoff", "200ms", "--delivery-backoff-max", "1s", "--delivery-timeout", "2s"}

// hookReceiver is a webhook receiver that verifies each request with the
// Standard Webhooks algorithm as published (HMAC-SHA256 over
// "id.timestamp.body", keyed with the base64-decoded secret after
// "whsec_"), written here from the specification.
type hookReceiver struct {
	t      *testing.T
	srv    *http.Server
	ln     net.Listener
	addr   string
	answer func(n int) int // status for the n-th try of an event; nil: 200

	mu     sync.Mutex
	secret string
	tries  map[string]int // by webhook-id
	got    []hookEvent    // accepted (2xx), in arrival order
}

type hookEvent struct {
	ID   string // webhook-id
	Type string `json:"type"`
	Data struct {
		Seq       int64  `json:"seq"`
		ID        string `json:"id"`
		ClusterID string `json:"cluster_id"`
		Type      string `json:"type"`
		Severity  string `json:"severity"`
	} `json:"data"`
}

// newHookReceiver listens on a loopback port; with up false it is down
// (connections refused) until start.
func newHookReceiver(t *testing.T, up bool) *hookReceiver {
	r := &hookReceiver{t: t, tries: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	if up {
		r.ln = ln
		go r.srv.Serve(ln) //nolint:errcheck // ends with Close
	} else {
		ln.Close()
	}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// start brings a down receiver up on its address.
func (r *hookReceiver) start() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("receiver back on %s: %v", r.addr, err)
	}
	r.ln = ln
	go r.srv.Serve(ln) //nolint:errcheck // ends with Close
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hook" }

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	secret := r.secret
	r.mu.Unlock()
	id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		r.t.Errorf("receiver: secret %q: %v", secret, err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		r.t.Errorf("receiver: bad signature %q for webhook-id %q", sig, id)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if unix, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		r.t.Errorf("receiver: webhook-timestamp %q is not now", ts)
	}
	var e hookEvent
	if err := json.Unmarshal(body, &e); err != nil {
		r.t.Errorf("receiver: body %s: %v", body, err)
	}
	e.ID = id
	r.mu.Lock()
	r.tries[id]++
	n := r.tries[id]
	status := 200
	if r.answer != nil {
		status = r.answer(n)
	}
	if status < 300 {
		r.got = append(r.got, e)
	}
	r.mu.Unlock()
	w.WriteHeader(status)
	fmt.Fprintf(w, "try %d answered %d", n, status)
}

func (r *hookReceiver) events() []hookEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookEvent(nil), r.got...)
}

// subscribe creates a webhook for the receiver and keeps its secret.
func (r *hookReceiver) subscribe(t *testing.T, c *client, body map[string]any) string {
	t.Helper()
	body["url"] = r.url()
	var w struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	c.do(t, "POST", "/v1/webhooks", body).must(t, 201).decode(t, &w)
	r.mu.Lock()
	r.secret = w.Secret
	r.mu.Unlock()
	return w.ID
}

// checkInOrder fails t unless evs are consecutive events of one cluster,
// each once: in order, without a gap, without a duplicate.
func checkInOrder(t *testing.T, what string, evs []hookEvent, first int64) {
	t.Helper()
	seen := map[string]bool{}
	for i, e := range evs {
		if e.Data.Seq != first+int64(i) {
			t.Fatalf("%s: event %d has seq %d, want %d (all: %+v)", what, i, e.Data.Seq, first+int64(i), evs)
		}
		if seen[e.ID] || e.ID != e.Data.ID {
			t.Fatalf("%s: webhook-id %s twice, or not the event id %s", what, e.ID, e.Data.ID)
		}
		seen[e.ID] = true
	}
}

// toggleMaintenance puts a node in maintenance and out n times: 2n
// events.
func toggleMaintenance(t *testing.T, c *client, cid, nid string, n int) {
	t.Helper()
	for range n {
		c.do(t, "PUT", "/v1/clusters/"+cid+"/nodes/"+nid+"/maintenance", nil).must(t, 200)
		c.do(t, "DELETE", "/v1/clusters/"+cid+"/nodes/"+nid+"/maintenance", nil).must(t, 200)
	}
}

func newClusterAndNode(t *testing.T, c *client) (string, string) {
	t.Helper()
	// A replica that becomes leader writes leader.changed into every
	// cluster's log: on a loaded machine that can come after the cluster
	// is created, and shift the seqs these tests expect. Wait for it.
	testkit.Eventually(t, 30*time.Second, "a leader", func() bool {
		var cp struct {
			LeaderID string `json:"leader_id"`
		}
		c.do(t, "GET", "/v1/control-plane", nil).must(t, 200).decode(t, &cp)
		return cp.LeaderID != ""
	})
	var cl, nd struct {
		ID string `json:"id"`
	}
	c.do(t, "POST", "/v1/clusters", map[string]any{"name": "mail"}).must(t, 201).decode(t, &cl)
	c.do(t, "POST", "/v1/clusters/"+cl.ID+"/nodes", map[string]any{"name": "mx1"}).must(t, 201).decode(t, &nd)
	return cl.ID, nd.ID
}

// mibDirs is where snmptrapd finds BACKSTOP-MIB and the IETF modules it
// imports (Debian ships those in erlang-snmp; see openapi/mib_test.go).
func mibDirs(t *testing.T) string {
	abs, err := filepath.Abs("../openapi")
	if err != nil {
		t.Fatal(err)
	}
	if d := os.Getenv("BACKSTOP_BASE_MIBS"); d != "" {
		return abs + ":" + d
	}
	ms, _ := filepath.Glob("/usr/lib/erlang/lib/snmp-*/mibs")
	for _, d := range ms {
		if _, err := os.Stat(filepath.Join(d, "SNMPv2-SMI.mib")); err == nil {
			return abs + ":" + d
		}
	}
	needTool(t, "the IETF base MIB modules (apt-get install erlang-snmp)")
	return ""
}

// needTool skips t, or fails it under CI, where .ci/run installs it.
func needTool(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s missing; .ci/run installs it", what)
	}
	t.Skipf("%s missing", what)
}

// trapd is net-snmp's snmptrapd on a loopback port, logging every trap
// as one line: "TRAP <security> | <varbind>~ <varbind>...".
type trapd struct {
	port int
	out  *syncBuffer
}

type trapLine struct {
	Security string            // e.g. "TRAP2, SNMP v3, user backstop, context"
	Vars     map[string]string // varbind name (MIB name resolved) -> value
}

func startTrapd(t *testing.T, engineID, user, auth, priv string) *trapd {
	t.Helper()
	bin, err := exec.LookPath("snmptrapd")
	if err != nil {
		needTool(t, "snmptrapd (apt-get install snmptrapd)")
	}
	mibs := mibDirs(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "snmptrapd.conf")
	// v2c traps with community "public" and v3 authPriv traps from the
	// backstopd engine are logged; nothing else.
	err = os.WriteFile(conf, fmt.Appendf(nil, "authCommunity log public\ncreateUser -e 0x%s %s SHA-256 %s AES %s\nauthUser log %s priv\n",
		engineID, user, auth, priv, user), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	d := &trapd{port: port, out: &syncBuffer{}}
	cmd := exec.Command(bin, "-f", "-C", "-c", conf, "-Lo", "-M", "+"+mibs, "-m", "+BACKSTOP-MIB",
		"-F", "TRAP %P | %V~ %v\n", fmt.Sprintf("udp:127.0.0.1:%d", port))
	// Its own persistent directory: no engine boots/time remembered from
	// another run, nothing written to /var/lib/snmp.
	cmd.Env = append(os.Environ(), "SNMP_PERSISTENT_DIR="+filepath.Join(dir, "persist"))
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("snmptrapd output:\n%s", d.lines("TRAP ", "NET-SNMP", "snmptrapd"))
		}
	})
	testkit.Eventually(t, 0, "snmptrapd to start", func() bool { return strings.Contains(d.out.String(), "NET-SNMP version") })
	return d
}

// lines returns the output lines starting with one of the prefixes.
func (d *trapd) lines(prefixes ...string) string {
	var keep []string
	for _, l := range strings.Split(d.out.String(), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				keep = append(keep, l)
			}
		}
	}
	return strings.Join(keep, "\n")
}

func (d *trapd) traps() []trapLine {
	var out []trapLine
	for _, l := range strings.Split(d.lines("TRAP "), "\n") {
		sec, vars, ok := strings.Cut(strings.TrimPrefix(l, "TRAP "), " | ")
		if !ok {
			continue
		}
		tl := trapLine{Security: sec, Vars: map[string]string{}}
		for _, vb := range strings.Split(vars, "~ ") {
			if k, v, ok := strings.Cut(vb, " = "); ok {
				tl.Vars[k] = v
			}
		}
		out = append(out, tl)
	}
	return out
}

// TestEventsReachWebhooksAndTraps: real events flow to signed webhooks
// (in order, no gaps, each once), to snmptrapd as v2c and v3 authPriv
// traps logged with BACKSTOP-MIB's names, and through a receiver that
// fails three times; a receiver down past the retry budget ends
// dead-lettered with an event; an event stream resumed with
// Last-Event-ID misses nothing.
func TestEventsReachWebhooksAndTraps(t *testing.T) {
	db := newDatabase(t)
	d := &daemon{t: t, name: "backstopd", dbURL: db, bootstrap: adminSecret, args: fastRetry}
	d.launch()
	d.waitReady()
	c := d.client(adminSecret)
	cid, nid := newClusterAndNode(t, c)

	var engine struct {
		EngineID string `json:"engine_id"`
		Boots    int    `json:"boots"`
	}
	c.do(t, "GET", "/v1/snmp-engine", nil).must(t, 200).decode(t, &engine)
	td := startTrapd(t, engine.EngineID, "backstop", "auth-pass-1", "priv-pass-1")
	maint := []string{"node.*"}
	c.do(t, "POST", "/v1/snmp-targets", map[string]any{"name": "nms-v2c", "host": "127.0.0.1", "port": td.port, "snmp_version": "v2c",
		"community": "public", "min_severity": "info", "event_types": maint}).must(t, 201)
	var v3target struct {
		ID string `json:"id"`
	}
	c.do(t, "POST", "/v1/snmp-targets", map[string]any{"name": "nms-v3", "host": "127.0.0.1", "port": td.port, "snmp_version": "v3",
		"v3":           map[string]any{"user": "backstop", "auth_protocol": "SHA-256", "auth_passphrase": "auth-pass-1", "priv_protocol": "AES", "priv_passphrase": "priv-pass-1"},
		"min_severity": "info", "event_types": maint}).must(t, 201).decode(t, &v3target)
	var critical struct {
		ID          string `json:"id"`
		MinSeverity string `json:"min_severity"`
	}
	c.do(t, "POST", "/v1/snmp-targets", map[string]any{"name": "nms-default", "host": "127.0.0.1", "port": td.port, "snmp_version": "v2c",
		"community": "public"}).must(t, 201).decode(t, &critical)
	if critical.MinSeverity != "critical" {
		t.Errorf("an SNMP target's default min_severity is %q, want critical", critical.MinSeverity)
	}

	all := newHookReceiver(t, true)
	all.subscribe(t, c, map[string]any{"name": "all", "cluster_ids": []string{cid}})
	flaky := newHookReceiver(t, true)
	flaky.answer = func(n int) int {
		if n <= 3 {
			return 500
		}
		return 200
	}
	flaky.subscribe(t, c, map[string]any{"name": "flaky", "event_types": []string{"node.maintenance_started"}})
	gone := newHookReceiver(t, false)
	goneID := gone.subscribe(t, c, map[string]any{"name": "gone", "event_types": []string{"node.maintenance_started"}})

	// A live stream, read while the events happen.
	stream := openStream(t, d, cid, "")
	toggleMaintenance(t, c, cid, nid, 3) // events 1..6

	testkit.Eventually(t, 20*time.Second, "6 events at the webhook", func() bool { return len(all.events()) >= 6 })
	checkInOrder(t, "webhook", all.events()[:6], 1)
	for i, e := range all.events()[:6] {
		want := map[bool]string{true: "node.maintenance_started", false: "node.maintenance_ended"}[i%2 == 0]
		if e.Type != want || e.Data.ClusterID != cid {
			t.Errorf("webhook event %d is %s of %s, want %s of %s", i, e.Type, e.Data.ClusterID, want, cid)
		}
	}

	testkit.Eventually(t, 20*time.Second, "12 traps at snmptrapd", func() bool { return len(td.traps()) >= 12 })
	var v2, v3 []trapLine
	for _, tr := range td.traps() {
		switch {
		case strings.Contains(tr.Security, "SNMP v2c, community public"):
			v2 = append(v2, tr)
		case strings.Contains(tr.Security, "SNMP v3, user backstop"):
			v3 = append(v3, tr)
		default:
			t.Errorf("trap with security %q", tr.Security)
		}
	}
	for name, trs := range map[string][]trapLine{"v2c": v2, "v3": v3} {
		if len(trs) != 6 {
			t.Fatalf("%d %s traps, want 6:\n%s", len(trs), name, td.lines("TRAP "))
		}
		for i, tr := range trs {
			want := map[bool]string{true: "BACKSTOP-MIB::backstopNodeMaintenanceStarted", false: "BACKSTOP-MIB::backstopNodeMaintenanceEnded"}[i%2 == 0]
			if got := tr.Vars["SNMPv2-MIB::snmpTrapOID.0"]; got != "OID: "+want {
				t.Errorf("%s trap %d: snmpTrapOID.0 = %q, want %s", name, i, got, want)
			}
			if got := tr.Vars["BACKSTOP-MIB::backstopEventSeq.0"]; got != fmt.Sprintf("Counter64: %d", i+1) {
				t.Errorf("%s trap %d: backstopEventSeq.0 = %q", name, i, got)
			}
			if got := tr.Vars["BACKSTOP-MIB::backstopEventSeverity.0"]; got != "INTEGER: info(1)" {
				t.Errorf("%s trap %d: backstopEventSeverity.0 = %q", name, i, got)
			}
			if got := tr.Vars["BACKSTOP-MIB::backstopClusterId.0"]; got != `STRING: "`+cid+`"` && got != "STRING: "+cid {
				t.Errorf("%s trap %d: backstopClusterId.0 = %q", name, i, got)
			}
		}
	}

	// A test trap, sent at once.
	c.do(t, "POST", "/v1/snmp-targets/"+v3target.ID+"/test", nil).must(t, 200)
	testkit.Eventually(t, 0, "the test trap", func() bool {
		return strings.Contains(td.lines("TRAP "), "SNMPv2-MIB::snmpTrapOID.0 = OID: BACKSTOP-MIB::backstopTestNotification")
	})

	// The flaky receiver got each of its 3 events once, on the 4th try.
	testkit.Eventually(t, 20*time.Second, "3 events at the flaky receiver", func() bool { return len(flaky.events()) >= 3 })
	flaky.mu.Lock()
	for id, n := range flaky.tries {
		if n != 4 {
			t.Errorf("flaky receiver: event %s tried %d times, want 4", id, n)
		}
	}
	flaky.mu.Unlock()
	for i, e := range flaky.events() {
		if e.Data.Seq != int64(1+2*i) {
			t.Errorf("flaky receiver: event %d has seq %d", i, e.Data.Seq)
		}
	}

	// The receiver that never came up: 3 dead letters, each an event.
	testkit.Eventually(t, 30*time.Second, "3 dead letters", func() bool {
		var l struct{ Items []json.RawMessage }
		c.do(t, "GET", "/v1/clusters/"+cid+"/events?type=delivery.dead_lettered", nil).must(t, 200).decode(t, &l)
		return len(l.Items) == 3
	})
	var dl struct {
		Items []struct {
			Status   string `json:"status"`
			Attempts int    `json:"attempts"`
		}
	}
	c.do(t, "GET", "/v1/webhooks/"+goneID+"/deliveries", nil).must(t, 200).decode(t, &dl)
	if len(dl.Items) != 3 {
		t.Fatalf("gone receiver: %d deliveries, want 3", len(dl.Items))
	}
	for _, x := range dl.Items {
		if x.Status != "dead_lettered" || x.Attempts != 4 {
			t.Errorf("gone receiver: delivery %+v, want dead_lettered after 4 attempts", x)
		}
	}
	// Default filter: critical only, so no maintenance trap went there.
	var none struct{ Items []json.RawMessage }
	c.do(t, "GET", "/v1/snmp-targets/"+critical.ID+"/deliveries", nil).must(t, 200).decode(t, &none)
	if len(none.Items) != 0 {
		t.Errorf("the critical-only SNMP target got %d deliveries", len(none.Items))
	}

	// The stream saw the 6 events and the 3 dead letters; a client
	// that left after 4 resumes with Last-Event-ID and misses nothing.
	first := stream.read(t, 4)
	stream.close()
	toggleMaintenance(t, c, cid, nid, 1) // 2 more while away
	rest := openStream(t, d, cid, first[3].ID).read(t, 5+2)
	seq := int64(0)
	for _, ev := range append(first, rest...) {
		seq++
		if ev.ID != strconv.FormatInt(seq, 10) || ev.Seq != seq {
			t.Fatalf("stream: event id %s (seq %d), want %d", ev.ID, ev.Seq, seq)
		}
	}
}

// TestDeliverySurvivesCrash: events are committed while the receiver is
// down; backstopd is killed (SIGKILL) before they are delivered; after a
// restart every one is delivered, in order, once.
func TestDeliverySurvivesCrash(t *testing.T) {
	db := newDatabase(t)
	args := []string{"--delivery-max-attempts", "20", "--delivery-backoff", "3s", "--delivery-backoff-max", "3s", "--delivery-timeout", "2s"}
	d := &daemon{t: t, name: "backstopd", dbURL: db, bootstrap: adminSecret, args: args}
	d.launch()
	d.waitReady()
	c := d.client(adminSecret)
	cid, nid := newClusterAndNode(t, c)
	r := newHookReceiver(t, false)
	wid := r.subscribe(t, c, map[string]any{"cluster_ids": []string{cid}})
	toggleMaintenance(t, c, cid, nid, 2) // 4 events, committed

	// Wait for the first attempt to fail (the receiver is down), so the
	// kill comes between attempts: no delivery can have happened.
	testkit.Eventually(t, 15*time.Second, "a failed attempt", func() bool {
		var l struct {
			Items []struct {
				Attempts int `json:"attempts"`
			}
		}
		c.do(t, "GET", "/v1/webhooks/"+wid+"/deliveries", nil).must(t, 200).decode(t, &l)
		return len(l.Items) == 4 && l.Items[3].Attempts >= 1
	})
	d.p.abandoned = true // killed on purpose: the cleanup must not expect a clean exit
	if err := d.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.p.exited
	if n := len(r.events()); n != 0 {
		t.Fatalf("%d events delivered to a receiver that is down", n)
	}

	r.start()
	d.launch()
	d.waitReady()
	// The 4 events, then the new leader's leader.changed (written at the
	// restart, after them).
	testkit.Eventually(t, 30*time.Second, "5 events after the restart", func() bool { return len(r.events()) >= 5 })
	time.Sleep(time.Second) // nothing more may come
	got := r.events()
	checkInOrder(t, "after restart", got, 1)
	if len(got) != 5 || got[3].Type != "node.maintenance_ended" || got[4].Type != "leader.changed" {
		t.Errorf("delivered %+v; want 4 maintenance events and leader.changed", got)
	}
}

// sseClient reads one event stream.
type sseClient struct {
	resp   *http.Response
	sc     *bufio.Scanner
	cancel context.CancelFunc
}

type sseMsg struct {
	ID  string `json:"-"` // the SSE id: line (the data's "id" is the event's UUID)
	Seq int64  `json:"seq"`
}

func openStream(t *testing.T, d *daemon, cid, lastID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, "GET", d.url()+"/v1/clusters/"+cid+"/events/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := plainClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("event stream: %s %s: %s", resp.Status, resp.Header.Get("Content-Type"), b)
	}
	s := &sseClient{resp: resp, sc: bufio.NewScanner(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s
}

func (s *sseClient) close() {
	s.cancel()
	s.resp.Body.Close()
}

// read returns the next n events.
func (s *sseClient) read(t *testing.T, n int) []sseMsg {
	t.Helper()
	var out []sseMsg
	var cur sseMsg
	for len(out) < n && s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur); err != nil {
				t.Fatal(err)
			}
		case line == "" && cur.ID != "":
			out = append(out, cur)
			cur = sseMsg{}
		}
	}
	if len(out) < n {
		t.Fatalf("event stream ended after %d of %d events: %v", len(out), n, s.sc.Err())
	}
	return out
}
