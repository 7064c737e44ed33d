package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/server/servertest"
	"github.com/backstop-ha/backstop/store/storetest"
)

// The CLI against a real backstopd on a real PostgreSQL with three real
// agents (server/servertest: in-process agents on fake resource kits).
// One cluster serves every subtest, in order: each leaves it as the next
// expects (mail in service on a known node).

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

// live runs backstopctl against the harness with its admin token; stdin
// answers confirmations.
type live struct {
	t   *testing.T
	h   *servertest.Harness
	env map[string]string
}

func (l *live) run(stdin string, args ...string) result {
	l.t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb, func(k string) string { return l.env[k] })
	return result{out.String(), errb.String(), code}
}

// ok runs args and fails the test unless they exit 0.
func (l *live) ok(args ...string) result {
	l.t.Helper()
	r := l.run("", args...)
	if r.code != 0 {
		l.t.Fatalf("backstopctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

func TestLiveCLI(t *testing.T) {
	h := servertest.New(t, servertest.Options{Nodes: 3, Profile: "lan"})
	h.CreateHierarchy(servertest.HierarchySpec{Name: "mail"})
	l := &live{t: t, h: h, env: map[string]string{envServer: h.URL, envToken: servertest.AdminToken, "XDG_CACHE_HOME": t.TempDir()}}

	t.Run("names and the /v1 hint", func(t *testing.T) {
		r := l.ok("clusters", "get", "servertest")
		mustContain(t, "clusters get by name", r.stdout, h.ClusterID, "lan")
		r = l.ok("--server", h.URL+"/v1/", "nodes", "get", "servertest", "node2")
		mustContain(t, "nodes get by name via /v1", r.stdout, h.Nodes[1].ID, "up")
		mustContain(t, "the /v1 note", r.stderr, "without /v1", "using "+h.URL)
		r = l.run("", "clusters", "get", "nosuch")
		if r.code != 1 || !strings.Contains(r.stderr, `no cluster named "nosuch"`) {
			t.Errorf("unknown name: exit %d, stderr %q", r.code, r.stderr)
		}
		r = l.run("", "clusters", "get", "ServerTest")
		if r.code != 1 || !strings.Contains(r.stderr, `did you mean "servertest"`) {
			t.Errorf("case: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("in-service waits and reports", func(t *testing.T) {
		r := l.ok("in-service", "servertest", "mail", "--node", "node1", "--wait")
		mustContain(t, "in-service --wait", r.stdout, "bring in service on node1", "succeeded", "start svc: ok")
		h.WaitPlaced("mail", 0)
	})

	t.Run("status", func(t *testing.T) {
		r := l.ok("status", "servertest")
		mustContain(t, "status", r.stdout, "Cluster servertest", "leader", "Nodes: 3, 3 up", "node1", "node3",
			"Paths: 3 link(s)", "Hierarchies: 1", "mail", "in service", "node1 > node2 > node3")
		if strings.Contains(r.stdout, "ALERTS") {
			t.Errorf("a healthy cluster shows alerts:\n%s", r.stdout)
		}
		// Each path's RTT and loss come from its sender's last report.
		testkit.Eventually(t, time.Minute, "status shows path RTTs", func() bool {
			out := l.ok("status", "servertest").stdout
			paths := out[strings.Index(out, "Paths:"):strings.Index(out, "Hierarchies:")]
			return strings.Count(paths, " ms ") == 6 && strings.Count(paths, "0%") == 6
		})
		r = l.ok("status", "servertest", "-o", "json")
		var doc statusDoc
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, r.stdout)
		}
		if len(doc.Nodes) != 3 || len(doc.Hierarchies) != 1 || doc.Hierarchies[0].Placement.NodeId.String() != h.Nodes[0].ID || len(doc.Paths) != 6 {
			t.Errorf("status -o json: %+v", doc)
		}
		r = l.ok("status", "servertest", "-o", "yaml")
		var y map[string]any
		if err := yaml.Unmarshal([]byte(r.stdout), &y); err != nil || y["cluster"] == nil {
			t.Errorf("status -o yaml: %v\n%s", err, r.stdout)
		}
	})

	t.Run("explain and simulate", func(t *testing.T) {
		r := l.ok("explain", "servertest", "mail")
		mustContain(t, "explain", r.stdout, "Hierarchy mail is in service on node1", "If node1 failed now, it would go to node2", "PRIORITY")
		r = l.ok("simulate", "servertest", "--fail-node", "node1", "--fail-node", "node2")
		mustContain(t, "simulate", r.stdout, "mail", "node3", "in_service")
		r = l.run("", "simulate", "servertest")
		if r.code != 2 || !strings.Contains(r.stderr, "nothing to simulate") {
			t.Errorf("simulate without failures: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("switchover and incidents", func(t *testing.T) {
		r := l.ok("switchover", "servertest", "mail", "--to", "node2", "--wait")
		mustContain(t, "switchover --wait", r.stdout, "switchover to node2", "succeeded")
		h.WaitPlaced("mail", 1)
		r = l.ok("incidents", "servertest")
		mustContain(t, "incidents", r.stdout, "switchover", "node1 -> node2", "started +")
	})

	t.Run("maintenance drains and ends", func(t *testing.T) {
		r := l.ok("maintenance", "on", "servertest", "node2", "--wait")
		mustContain(t, "maintenance on --wait", r.stdout, "Node node2 is in maintenance; draining 1", "Drained 1 of 1")
		if p := h.Placement("mail"); p.Node == 1 || p.State != "in_service" {
			t.Errorf("after draining node2: %+v", p)
		}
		r = l.ok("status", "servertest")
		mustContain(t, "status in maintenance", r.stdout, "MAINTENANCE")
		r = l.ok("maintenance", "off", "servertest", "node2")
		mustContain(t, "maintenance off", r.stdout, "left maintenance")
	})

	t.Run("events and follow", func(t *testing.T) {
		r := l.ok("events", "servertest", "--type", "switchover.completed")
		mustContain(t, "events --type", r.stdout, "switchover.completed")
		r = l.ok("events", "servertest", "-o", "json", "--severity", "warning")
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var ev map[string]any
			if line != "" && (json.Unmarshal([]byte(line), &ev) != nil || ev["severity"] == "info") {
				t.Errorf("events -o json --severity warning: line %q", line)
			}
		}

		// Follow from now, then act: the follower prints the events the
		// action writes, live.
		last := l.ok("events", "servertest", "-o", "json")
		lines := strings.Split(strings.TrimSpace(last.stdout), "\n")
		var lastEv struct {
			Seq int64 `json:"seq"`
		}
		_ = json.Unmarshal([]byte(lines[len(lines)-1]), &lastEv)
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{}
		done := make(chan int)
		go func() {
			var errb bytes.Buffer
			done <- run(ctx, []string{"events", "servertest", "--follow", "--after", jsonInt(lastEv.Seq)}, strings.NewReader(""), out, &errb,
				func(k string) string { return l.env[k] })
		}()
		r = l.run("yes\n", "out-of-service", "servertest", "mail", "--wait")
		if r.code != 0 {
			t.Fatalf("out-of-service: exit %d, %s %s", r.code, r.stdout, r.stderr)
		}
		mustContain(t, "out-of-service prompt", r.stderr, "Take hierarchy mail out of service on node", "Type yes")
		testkit.Eventually(t, time.Minute, "the follower prints hierarchy.out_of_service", func() bool {
			return strings.Contains(out.String(), "hierarchy.out_of_service")
		})
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("events --follow ended with %d", code)
		}
		if strings.Contains(out.String(), "switchover.completed") {
			t.Errorf("--follow --after printed old events:\n%s", out.String())
		}
	})

	t.Run("a failed operation exits 1", func(t *testing.T) {
		h.Nodes[2].Kit.FailStarts(h.HierarchyID("mail"), "svc", nil)
		r := l.run("", "in-service", "servertest", "mail", "--node", "node3", "--wait")
		h.Nodes[2].Kit.HealStarts(h.HierarchyID("mail"), "svc")
		if r.code != 1 || !strings.Contains(r.stdout, "FAILED") || !strings.Contains(r.stderr, "failed: bring in service on node3") {
			t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		r = l.ok("explain", "servertest", "mail")
		if strings.Contains(r.stdout, "Failed on") {
			r = l.ok("failed-marks", "clear", "servertest", "mail", "node3")
			mustContain(t, "failed-marks clear", r.stdout, "cleared")
		}
		l.ok("out-of-service", "servertest", "mail", "--yes", "--wait")
		l.ok("in-service", "servertest", "mail", "--node", "node1", "--wait")
		h.WaitPlaced("mail", 0)
	})

	t.Run("validation errors are printed once", func(t *testing.T) {
		spec := `{"name":"bad","resources":[{"name":"vip","kind":"ip","params":{"address":"not-an-ip","interface":"eth0"}}],` +
			`"priorities":[{"node_id":"` + h.Nodes[0].ID + `","priority":1},{"node_id":"` + h.Nodes[1].ID + `","priority":1}]}`
		r := l.run(spec, "hierarchies", "create", "servertest", "-f", "-")
		if r.code != 1 || !strings.HasPrefix(r.stderr, "error: 422 ") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		fieldLines := 0
		defer func() {
			if fieldLines == 0 {
				t.Errorf("no field error lines:\n%s", r.stderr)
			}
		}()
		for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n")[1:] {
			if strings.HasPrefix(line, "request id") || strings.HasPrefix(line, "hint") {
				continue
			}
			fieldLines++
			_, msg, _ := strings.Cut(strings.TrimSpace(line), ": ")
			if n := strings.Count(r.stderr, msg); msg == "" || n != 1 {
				t.Errorf("%q is printed %d times:\n%s", msg, n, r.stderr)
			}
		}
	})

	t.Run("hierarchy update by names", func(t *testing.T) {
		r := l.ok("hierarchies", "update", "servertest", "mail", "--description", "the mail service", "--priority", "node1=1", "--priority", "node3=2", "--priority", "node2=3")
		mustContain(t, "hierarchies update", r.stdout, "the mail service")
		r = l.ok("status", "servertest")
		mustContain(t, "status after update", r.stdout, "node1 > node3 > node2")
	})

	t.Run("webhooks", func(t *testing.T) {
		r := l.ok("webhooks", "create", "--url", "http://127.0.0.1:9/hook", "--name", "ops", "--event-type", "node.*", "--min-severity", "warning", "--cluster", "servertest")
		mustContain(t, "webhooks create", r.stdout, "whsec_", "shown only now")
		r = l.ok("webhooks", "get", "ops")
		mustContain(t, "webhooks get", r.stdout, "http://127.0.0.1:9/hook", "node.*", "warning", h.ClusterID)
		r = l.ok("webhooks", "update", "ops", "--enabled=false")
		if v := fieldValue(r.stdout, "Enabled"); v != "false" {
			t.Errorf("webhooks update: Enabled %q:\n%s", v, r.stdout)
		}
		r = l.ok("webhooks", "list")
		mustContain(t, "webhooks list", r.stdout, "ops")
		r = l.ok("webhooks", "rotate-secret", "ops", "--overlap-s", "60")
		mustContain(t, "webhooks rotate-secret", r.stdout, "whsec_", "shown only now")
		l.ok("webhooks", "create", "--url", "http://127.0.0.1:9/other", "--name", "ops", "--enabled=false")
		r = l.run("", "webhooks", "get", "ops")
		if r.code != 1 || !strings.Contains(r.stderr, `2 webhooks are named "ops"`) {
			t.Errorf("ambiguous name: exit %d, stderr %q", r.code, r.stderr)
		}
		var ids []string
		r = l.ok("webhooks", "list", "-o", "json")
		var doc struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
			t.Fatal(err)
		}
		for _, it := range doc.Items {
			ids = append(ids, it.ID)
		}
		for _, id := range ids {
			r = l.ok("webhooks", "delete", id, "--yes")
			mustContain(t, "webhooks delete", r.stdout, "deleted")
		}
	})

	t.Run("snmp targets", func(t *testing.T) {
		r := l.ok("snmp-targets", "create", "--name", "nms", "--host", "127.0.0.1", "--port", "16299", "--snmp-version", "v2c", "--community", "public")
		mustContain(t, "snmp-targets create", r.stdout, "nms", "127.0.0.1:16299", "v2c", "critical")
		r = l.ok("snmp-targets", "update", "nms", "--min-severity", "warning", "--snmp-version", "v3", "--v3-user", "backstop",
			"--v3-auth-passphrase", "auth-secret-1", "--v3-priv-passphrase", "priv-secret-1")
		mustContain(t, "snmp-targets update", r.stdout, "warning", "v3", "backstop", "SHA-256")
		r = l.ok("snmp-targets", "engine")
		mustContain(t, "snmp-targets engine", r.stdout, "createUser -e 0x")
		r = l.run("no\n", "snmp-targets", "delete", "nms")
		if r.code != 1 || !strings.Contains(r.stderr, "not confirmed") {
			t.Errorf("declined delete: exit %d, stderr %q", r.code, r.stderr)
		}
		l.ok("snmp-targets", "get", "nms")
		l.ok("snmp-targets", "delete", "nms", "--yes")
		if r := l.run("", "snmp-targets", "get", "nms"); r.code != 1 {
			t.Errorf("deleted target still there: %q", r.stdout)
		}
	})

	t.Run("custom timing and cluster delete", func(t *testing.T) {
		r := l.run("", "clusters", "create", "--name", "scratch", "--timing-profile", "custom")
		if r.code != 2 || !strings.Contains(r.stderr, "needs the timing values") {
			t.Errorf("custom without values: exit %d, stderr %q", r.code, r.stderr)
		}
		r = l.ok("clusters", "create", "--name", "scratch", "--heartbeat-ms", "100", "--lease-ttl-ms", "600", "--server-grace-ms", "150",
			"--path-heartbeat-ms", "100", "--path-dead-after", "4", "--quick-check-interval-ms", "300", "--deep-check-interval-ms", "3000")
		mustContain(t, "custom create", r.stdout, "custom", "100ms", "600ms", "4 missed")
		r = l.ok("clusters", "update", "scratch", "--lease-ttl-ms", "900")
		if lt, hb := fieldValue(r.stdout, "Lease TTL"), fieldValue(r.stdout, "Heartbeat"); lt != "900ms" || hb != "100ms" {
			t.Errorf("custom update: lease %q heartbeat %q:\n%s", lt, hb, r.stdout)
		}
		l.ok("nodes", "create", "scratch", "--name", "n1")

		r = l.run("", "clusters", "delete", "scratch")
		if r.code != 2 || !strings.Contains(r.stderr, "1 node(s)") || !strings.Contains(r.stderr, "--yes") {
			t.Errorf("delete without an answer: exit %d, stderr %q", r.code, r.stderr)
		}
		l.ok("clusters", "get", "scratch")
		r = l.run("yes\n", "clusters", "delete", "scratch")
		if r.code != 0 || !strings.Contains(r.stderr, "Delete cluster scratch") {
			t.Errorf("confirmed delete: exit %d, stderr %q", r.code, r.stderr)
		}
		if r := l.run("", "clusters", "get", "scratch"); r.code != 1 {
			t.Errorf("deleted cluster still there")
		}
	})

	t.Run("idempotency key replay", func(t *testing.T) {
		r := l.ok("tokens", "create", "--name", "nagios", "--role", "viewer", "--idempotency-key", "k-nagios")
		r2 := l.ok("tokens", "create", "--name", "nagios", "--role", "viewer", "--idempotency-key", "k-nagios")
		mustContain(t, "replayed create", r2.stderr, "replayed")
		// The replay names the same token but never repeats its secret.
		secret := fieldAfter(r.stdout, "SECRET:")
		if !strings.HasPrefix(secret, "bsk_") || strings.Contains(r2.stdout, secret) {
			t.Errorf("secret %q; replay:\n%s", secret, r2.stdout)
		}
		mustContain(t, "replayed create", r2.stdout, "not shown again")
		if fieldValue(r.stdout, "ID") != fieldValue(r2.stdout, "ID") {
			t.Errorf("replay names another token:\n%s\n%s", r.stdout, r2.stdout)
		}
		r = l.ok("tokens", "get", "nagios")
		mustContain(t, "tokens get", r.stdout, "viewer", "bsk_")
		r = l.ok("tokens", "reissue", "nagios", "--yes")
		mustContain(t, "tokens reissue", r.stdout, "new secret", "bsk_")
		r = l.ok("tokens", "delete", "nagios", "--yes")
		mustContain(t, "tokens delete by name", r.stdout, "revoked")
	})

	t.Run("whoami, templates, fence device, commands, keys, MIB", func(t *testing.T) {
		r := l.ok("whoami")
		if fieldValue(r.stdout, "Role") != "admin" {
			t.Errorf("whoami:\n%s", r.stdout)
		}
		r = l.ok("templates", "list")
		mustContain(t, "templates list", r.stdout, "nginx", "mail", "vip*")
		r = l.ok("templates", "get", "nginx")
		mustContain(t, "templates get", r.stdout, "data_source", "address", "templates apply")
		r = l.ok("templates", "apply", "servertest", "nginx", "--name", "web", "--param", "vip=198.18.0.70", "--param", "data_source=/srv/www-data",
			"--param", "port=8080", "--priority", "node2=1", "--priority", "node3=2")
		mustContain(t, "templates apply", r.stdout, "Name:", "web", "nginx")
		r = l.ok("hierarchies", "get", "servertest", "web", "-o", "json")
		mustContain(t, "the template's hierarchy", r.stdout, "198.18.0.70", h.Nodes[1].ID)
		l.ok("hierarchies", "delete", "servertest", "web", "--yes")

		r = l.ok("fence-device", "set", "servertest", "node3", "--agent", "fence_ack_manual", "--param", "ip=192.0.2.21", "--secret", "password=s3cret", "--timeout-s", "20")
		mustContain(t, "fence-device set", r.stdout, "fence_ack_manual", "ip=192.0.2.21", "password", "20 s")
		if strings.Contains(r.stdout, "s3cret") {
			t.Errorf("fence-device set printed the secret:\n%s", r.stdout)
		}
		r = l.ok("fence-device", "get", "servertest", "node3")
		mustContain(t, "fence-device get", r.stdout, "fence_ack_manual")
		l.ok("fence-device", "delete", "servertest", "node3", "--yes")
		if r := l.run("", "fence-device", "get", "servertest", "node3"); r.code != 1 || !strings.Contains(r.stderr, "404") {
			t.Errorf("fence-device after delete: exit %d, stderr %q", r.code, r.stderr)
		}

		r = l.ok("commands", "servertest", "--node", "node1")
		mustContain(t, "commands", r.stdout, "bring_in_service", "node1", "mail")
		r = l.ok("signing-keys", "list")
		mustContain(t, "signing-keys list", r.stdout, "true")
		r = l.ok("snmp-mib")
		mustContain(t, "snmp-mib", r.stdout, "BACKSTOP-MIB DEFINITIONS ::= BEGIN")
	})

	t.Run("status --watch redraws on events", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{}
		done := make(chan int)
		go func() {
			var errb bytes.Buffer
			done <- run(ctx, []string{"status", "servertest", "--watch"}, strings.NewReader(""), out, &errb, func(k string) string { return l.env[k] })
		}()
		testkit.Eventually(t, time.Minute, "the first screen", func() bool { return strings.Contains(out.String(), "Hierarchies:") })
		l.ok("switchover", "servertest", "mail", "--to", "node3", "--wait")
		testkit.Eventually(t, time.Minute, "a screen with mail on node3", func() bool {
			screens := strings.Split(out.String(), "\x1b[H\x1b[2J")
			last := screens[len(screens)-1]
			for _, line := range strings.Split(last, "\n") {
				if f := strings.Fields(line); len(f) > 3 && f[0] == "mail" && f[1] == "in" && f[3] == "node3" {
					return true
				}
			}
			return false
		})
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("status --watch ended with %d", code)
		}
		l.ok("switchover", "servertest", "mail", "--to", "node1", "--wait")
	})

	t.Run("completion names from the server", func(t *testing.T) {
		r := l.ok("__complete", "status", "")
		mustContain(t, "complete status", r.stdout, "servertest")
		r = l.ok("__complete", "switchover", "servertest", "m")
		mustContain(t, "complete switchover", r.stdout, "mail")
		r = l.ok("__complete", "switchover", "servertest", "mail", "--to", "")
		mustContain(t, "complete --to", r.stdout, "node1", "node2", "node3")
		r = l.ok("completion", "bash")
		mustContain(t, "completion bash", r.stdout, "__start_backstopctl")
	})
}

// fieldValue returns the value of a "Key:  value" line of a detail view.
func fieldValue(out, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func jsonInt(v int64) string { b, _ := json.Marshal(v); return string(b) }

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fieldAfter returns the first non-blank line after the line holding
// heading, trimmed.
func fieldAfter(out, heading string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != heading {
			continue
		}
		for _, n := range lines[i+1:] {
			if v := strings.TrimSpace(n); v != "" {
				return v
			}
		}
	}
	return ""
}
