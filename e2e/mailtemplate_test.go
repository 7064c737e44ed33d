//go:build linux

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
)

const (
	dovecotBin   = "/usr/sbin/dovecot"
	mailPassword = "alice-secret"
	probeRcpt    = "probe@" + mailDomain
)

// configureDovecot writes Dovecot's configuration beside Postfix's: IMAP
// on the VIP, its base and state directories, log and the Maildirs Postfix
// delivers to all on the volume, users in a passwd-file (alice, and the
// probe mailbox of the template's deep check); and adds the probe mailbox
// to Postfix.
func (m *mailSetup) configureDovecot(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(dovecotBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("needs Dovecot (apt-get install -y dovecot-imapd): %v", err)
		}
		t.Skipf("needs Dovecot (apt-get install -y dovecot-imapd): %v", err)
	}
	for _, d := range []string{m.vol("run"), m.vol("lib")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`# Written by the e2e mail-template test.
protocols = imap
listen = %[1]s
base_dir = %[2]s/dovecot
state_dir = %[3]s
log_path = %[4]s/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[5]s/users
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=%[6]s/%%n
}
mail_location = maildir:%[6]s/%%n
`, m.vip, m.mnt("run"), m.mnt("lib"), m.mnt("log"), m.conf, m.mnt("vmail"))
	files := map[string]string{
		"dovecot.conf": conf,
		"users":        fmt.Sprintf("%s:{PLAIN}%s\n%s:{PLAIN}probe-secret\n", m.rcpt, mailPassword, probeRcpt),
		"probe.pw":     "probe-secret\n",
	}
	for name, body := range files {
		if err := os.WriteFile(m.confPath(name), []byte(body), 0o644); err != nil { // Dovecot's auth process reads users as the dovecot user
			t.Fatal(err)
		}
	}
	maps := fmt.Sprintf("virtual_mailbox_maps = inline:{ %s=alice/, %s=probe/ }", m.rcpt, probeRcpt)
	if out, err := exec.Command("postconf", "-c", m.conf, "-e", maps).CombinedOutput(); err != nil {
		t.Fatalf("postconf -e: %v\n%s", err, out)
	}
}

func (m *mailSetup) confPath(name string) string { return m.conf + "/" + name }

// imapClient is the test's IMAP user (RFC 3501 over net/textproto).
type imapClient struct {
	c   net.Conn
	r   *bufio.Reader
	seq int
}

func imapLogin(addr, user, pw string, timeout time.Duration) (*imapClient, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	ic := &imapClient{c: c, r: bufio.NewReader(c)}
	if l, err := ic.line(); err != nil || !strings.HasPrefix(l, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting %q: %v", l, err)
	}
	if _, err := ic.cmd(fmt.Sprintf("LOGIN %q %q", user, pw)); err != nil {
		c.Close()
		return nil, err
	}
	return ic, nil
}

func (ic *imapClient) line() (string, error) {
	l, err := ic.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// cmd runs one command; untagged responses are returned with each
// literal ({n}) inlined.
func (ic *imapClient) cmd(c string) ([]string, error) {
	ic.seq++
	tag := "t" + strconv.Itoa(ic.seq)
	if _, err := fmt.Fprintf(ic.c, "%s %s\r\n", tag, c); err != nil {
		return nil, err
	}
	var out []string
	for {
		l, err := ic.line()
		if err != nil {
			return nil, err
		}
		for strings.HasSuffix(l, "}") { // a literal follows
			i := strings.LastIndex(l, "{")
			n, err := strconv.Atoi(l[i+1 : len(l)-1])
			if err != nil {
				return nil, fmt.Errorf("bad literal in %q", l)
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(ic.r, buf); err != nil {
				return nil, err
			}
			rest, err := ic.line()
			if err != nil {
				return nil, err
			}
			l = l[:i] + string(buf) + rest
		}
		if r, ok := strings.CutPrefix(l, tag+" "); ok {
			if !strings.HasPrefix(r, "OK") {
				return nil, fmt.Errorf("%s: %s", strings.Fields(c)[0], r)
			}
			return out, nil
		}
		out = append(out, l)
	}
}

func (ic *imapClient) close() {
	_, _ = ic.cmd("LOGOUT")
	ic.c.Close()
}

// messageIDs reads every message's Message-ID over IMAP.
func (ic *imapClient) messageIDs() (map[string]int, error) {
	if _, err := ic.cmd("SELECT INBOX"); err != nil {
		return nil, err
	}
	_ = ic.c.SetDeadline(time.Now().Add(30 * time.Second))
	lines, err := ic.cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
	if err != nil && !strings.Contains(err.Error(), "Invalid messageset") && !strings.Contains(err.Error(), "No matching messages") {
		return nil, err
	}
	ids := map[string]int{}
	for _, l := range lines {
		low := strings.ToLower(l)
		if i := strings.Index(low, "message-id:"); i >= 0 {
			v := strings.TrimSpace(l[i+len("message-id:"):])
			if j := strings.Index(v, ">"); j >= 0 {
				v = v[:j+1]
			}
			ids[v]++
		}
	}
	return ids, nil
}

// imapReader logs in by name every few milliseconds and reads the message
// count: a mail user whose reads are timed through the faults.
type imapReader struct {
	mu   sync.Mutex // mu guards ok and lastErr
	ok   []time.Time
	last string
	stop chan struct{}
	done chan struct{}
}

func startIMAPReader(resolve func() (string, error), user, pw string) *imapReader {
	r := &imapReader{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			err := func() error {
				host, err := resolve()
				if err != nil {
					return err
				}
				ic, err := imapLogin(net.JoinHostPort(host, "143"), user, pw, time.Second)
				if err != nil {
					return err
				}
				defer ic.close()
				_, err = ic.cmd("STATUS INBOX (MESSAGES)")
				return err
			}()
			r.mu.Lock()
			if err == nil {
				r.ok = append(r.ok, time.Now())
			} else {
				r.last = err.Error()
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// gap returns the longest time without a successful read from at until
// the first read after until.
func (r *imapReader) gap(at, until time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, longest := at, time.Duration(0)
	for _, t := range r.ok {
		if !t.After(at) {
			continue
		}
		if g := t.Sub(prev); g > longest {
			longest = g
		}
		prev = t
		if t.After(until) {
			return longest, true
		}
	}
	return longest, false
}

func (r *imapReader) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

// TestMailTemplate is the mail template's proof: the hierarchy is created
// through the API from the template (Postfix + Dovecot on one volume, the
// VIP, the name mail.test.example published in a real BIND, the deep
// check sending through SMTP and reading back over IMAP) on three nodes.
// A client sends mail continuously to the name (resolved at the server
// before each session) and a reader reads the mailbox over IMAP by name.
// Node 1 crashes (→ node 2), then an operator switches over to node 3.
// Every accepted message must be readable over IMAP at the end, and no
// two nodes ever held the VIP or listened on its port 25.
func TestMailTemplate(t *testing.T) {
	m := newMailDir(t)
	// Each node has its own Postfix configuration directory, as each
	// machine has its own /etc/postfix: a change on one node reaches
	// another only through the files resource.
	nc := newNSClusterWith(t, 3, "lan", 1, m.nodeBinds(t, 3))
	b := startBind(t, nc.top)
	vip := nc.top.vip(0)
	m.configure(t, vip, nc.top.subnet)
	m.configureDovecot(t)
	m.confToNodes(t, 3)
	const name = "mail." + dnsZone
	var ps []map[string]any
	for i := range 3 {
		ps = append(ps, map[string]any{"node_id": nc.nodes[i], "priority": i + 1})
	}
	var h struct {
		ID               string           `json:"id"`
		ExclusivityGroup string           `json:"exclusivity_group"`
		Resources        []map[string]any `json:"resources"`
	}
	nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/from-template", map[string]any{
		"template": "mail", "version": 2, "name": "mail", "priorities": ps,
		"parameters": map[string]any{
			"vip": vip, "interface": "eth0", "backup_interfaces": []string{"eth1"},
			"data_source": m.volume, "data_target": m.target,
			"dns_name": name, "dns_zone": dnsZone, "dns_server": b.addr, "tsig_key_file": b.keyFile,
			"postfix_config_dir": m.conf, "postfix_pid_file": m.mnt("spool", "pid", "master.pid"),
			"dovecot_config": m.confPath("dovecot.conf"), "dovecot_pid_file": m.mnt("run", "dovecot", "master.pid"),
			"probe_rcpt": probeRcpt, "probe_user": probeRcpt, "probe_password_file": m.confPath("probe.pw"),
			"config_paths": []string{m.confPath("main.cf"), m.confPath("master.cf")},
		},
	}).must(t, 201).decode(t, &h)
	if h.ExclusivityGroup != "mail" || len(h.Resources) != 7 {
		t.Fatalf("hierarchy from the template: group %q, %d resources", h.ExclusivityGroup, len(h.Resources))
	}
	inv := nc.watchInvariantPort(vip, 25)
	defer func() {
		if t.Failed() {
			t.Logf("mail logs:\n%s", m.logs(nc))
			if b, err := os.ReadFile(m.vol("log", "dovecot.log")); err == nil {
				t.Logf("dovecot.log:\n%s", b)
			}
		}
	}()
	nc.placeOn(h.ID, 0)
	resolve := func() (string, error) {
		if a := b.lookup(name); a != "" {
			return a, nil
		}
		return "", errors.New(name + " does not resolve")
	}
	if a, _ := resolve(); a != vip {
		t.Fatalf("%s resolves to %q, want the VIP %s", name, a, vip)
	}
	// The deep check (SMTP send, IMAP read back) passes on node 1.
	testkit.Eventually(t, 30*time.Second, "a probe message delivered and read back by the deep check", func() bool {
		return m.probeDone()
	})
	// The configuration as it was at bring-up is version 1.
	testkit.Eventually(t, 30*time.Second, "config.captured version 1", func() bool { return configVersionEvent(nc, "config.captured", 1, "") != nil })
	if _, err := smtpSession(vip, aliasRcpt, "<alias-before@client.test>"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("mail to %s before the alias exists: %v, want 550 (unknown user)", aliasRcpt, err)
	}

	client := startMailClientBy("25", m.rcpt, resolve)
	defer client.halt()
	reader := startIMAPReader(resolve, m.rcpt, mailPassword)
	defer reader.halt()
	testkit.Eventually(t, 0, "the first message accepted", func() bool { return len(client.acceptedSince(time.Time{})) > 0 })
	time.Sleep(2 * time.Second)

	var aliasIDs []string // messages sent to the alias of the change
	measure := func(fault string, at time.Time, to int) {
		t.Helper()
		nc.waitPlaced(h.ID, to, 30*time.Second)
		placed := time.Now()
		testkit.Eventually(t, 15*time.Second, fmt.Sprintf("a message accepted on node%d after %s (last error: %s)", to+1, fault, client.lastError()),
			func() bool { return len(client.acceptedSince(placed)) > 0 })
		acc := client.acceptedSince(at)
		end := client.acceptedSince(placed)[0]
		prev, smtpGap := at, time.Duration(0)
		for _, a := range acc {
			if a.After(end) {
				break
			}
			smtpGap = max(smtpGap, a.Sub(prev))
			prev = a
		}
		var imapGap time.Duration
		testkit.Eventually(t, 15*time.Second, "an IMAP read after "+fault, func() bool {
			var ok bool
			imapGap, ok = reader.gap(at, placed)
			return ok
		})
		t.Logf("%s: SMTP outage %v, IMAP outage %v (both by name); in service on node%d +%v after the fault",
			fault, smtpGap.Round(time.Millisecond), imapGap.Round(time.Millisecond), to+1, placed.Sub(at).Round(time.Millisecond))
		time.Sleep(2 * time.Second)
	}

	// An operator changes Postfix's configuration on node 1: a banner and
	// a virtual alias (as an editor saves: a new file renamed over the
	// old). The agent captures it as version 2.
	changedAt := time.Now()
	wantSHA := m.editConfig(t, 0, fmt.Sprintf("smtpd_banner = $myhostname ESMTP %s\nvirtual_alias_maps = inline:{ %s=%s }\n", configBanner, aliasRcpt, m.rcpt))
	var captured *eventRecord
	testkit.Eventually(t, 30*time.Second, "config.captured version 2", func() bool {
		captured = configVersionEvent(nc, "config.captured", 2, nc.nodes[0])
		return captured != nil
	})
	t.Logf("configuration change on node1 → config.captured version 2: %v", captured.At.Sub(changedAt).Round(time.Millisecond))
	if b, _ := os.ReadFile(m.nodeConf(1, "main.cf")); strings.Contains(string(b), configBanner) {
		t.Fatal("node2's main.cf has the change before any failover: the nodes share their configuration directory")
	}

	at := time.Now()
	nc.crash(0, inv)
	measure("node1 crash", at, 1)
	checkConfigOn := func(i int) {
		t.Helper()
		if got := fileSHA(t, m.nodeConf(i, "main.cf")); got != wantSHA {
			t.Fatalf("node%d's main.cf has sha256 %s, want %s (the captured change)", i+1, got, wantSHA)
		}
		banner, err := smtpSession(vip, aliasRcpt, fmt.Sprintf("<alias-node%d@client.test>", i+1))
		if err != nil || !strings.Contains(banner, configBanner) {
			t.Fatalf("SMTP on node%d: banner %q, %v; want the banner and the alias of the change", i+1, banner, err)
		}
		aliasIDs = append(aliasIDs, fmt.Sprintf("<alias-node%d@client.test>", i+1))
		// Reported once the hierarchy runs (the report does not delay
		// the bring-up).
		var ev *eventRecord
		testkit.Eventually(t, 15*time.Second, fmt.Sprintf("config.installed of version 2 by node%d", i+1), func() bool {
			ev = configVersionEvent(nc, "config.installed", 2, nc.nodes[i])
			return ev != nil
		})
		if ev.Details["source"] != "control_plane" {
			t.Fatalf("config.installed by node%d: %+v", i+1, ev)
		}
		for _, l := range nc.agents[i].logLines("msg", "configuration version installed") {
			t.Logf("node%d installed configuration version %v in %vms (%v files written) before Postfix started", i+1, l["version"], l["duration_ms"], l["files_written"])
		}
	}
	checkConfigOn(1)

	at = time.Now()
	r := nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/"+h.ID+"/switchover", map[string]any{"node_id": nc.nodes[2]}).must(t, 202)
	op := nc.operation(r.header.Get("Location"), 60*time.Second)
	if op["state"] != "succeeded" {
		t.Fatalf("switchover to node3: %v", op)
	}
	var steps []string
	for _, s := range op["steps"].([]any) {
		s := s.(map[string]any)
		steps = append(steps, fmt.Sprintf("%v/%v %vms", s["resource"], s["action"], s["duration_ms"]))
	}
	for _, l := range nc.agents[1].logLines("event", "step") {
		if l["action"] == "stop" {
			steps = append(steps, fmt.Sprintf("node2 %v/stop %vms", l["resource"], l["duration_ms"]))
		}
	}
	t.Logf("switchover steps: %s", strings.Join(steps, ", "))
	measure("switchover node2 → node3", at, 2)
	checkConfigOn(2)

	client.halt()
	reader.halt()
	accepted := append(client.acceptedIDs(), aliasIDs...)
	var got map[string]int
	testkit.Eventually(t, 30*time.Second, "every accepted message readable over IMAP", func() bool {
		ic, err := imapLogin(net.JoinHostPort(vip, "143"), m.rcpt, mailPassword, 2*time.Second)
		if err != nil {
			t.Logf("imap: %v", err)
			return false
		}
		defer ic.close()
		if got, err = ic.messageIDs(); err != nil {
			t.Logf("imap fetch: %v", err)
			return false
		}
		for _, id := range accepted {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("client: %d messages accepted in %d attempts; IMAP reads %d messages (%d duplicate copies): 0 lost",
		len(accepted), client.attempts.Load(), len(got), dups)
	nc.hasEvents("config.captured", "node.down", "failover.completed", "switchover.completed")
	inv.check(t)
}

// probeDone reports whether the deep check's probe mailbox has seen a
// message come and go (delivered, then expunged over IMAP).
func (m *mailSetup) probeDone() bool {
	_, err := os.Stat(m.vol("vmail", "probe", "dovecot-uidlist"))
	return err == nil
}

// The configuration change of TestMailTemplate: a banner and an alias.
const (
	configBanner = "backstop-config-v2"
	aliasRcpt    = "bob@" + mailDomain
)

// editConfig appends lines to node i's main.cf the way an editor saves
// (a new file renamed over the old one) and returns the new file's
// SHA-256.
func (m *mailSetup) editConfig(t *testing.T, i int, lines string) string {
	t.Helper()
	p := m.nodeConf(i, "main.cf")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, lines...)
	if err := os.WriteFile(p+".new", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
	return backstop.FileSHA256(b)
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return backstop.FileSHA256(b)
}

// configVersionEvent returns the event of type typ about version v
// (written for node, when not empty), or nil.
func configVersionEvent(nc *nsCluster, typ string, v int, node string) *eventRecord {
	for _, e := range nc.eventsOf(typ) {
		if e.Details["version"] == float64(v) && (node == "" || e.Details["node_id"] == node) {
			return &e
		}
	}
	return nil
}

// smtpSession sends one message to rcpt through addr:25 and returns the
// server's greeting; an error names the refused step with its reply.
func smtpSession(addr, rcpt, msgID string) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "25"), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	_, banner, err := tp.ReadResponse(220)
	if err != nil {
		return "", fmt.Errorf("greeting: %w", err)
	}
	step := func(code int, format string, args ...any) error {
		id, err := tp.Cmd(format, args...)
		if err != nil {
			return err
		}
		tp.StartResponse(id)
		defer tp.EndResponse(id)
		_, _, err = tp.ReadResponse(code)
		return err
	}
	for _, s := range []struct {
		code int
		cmd  string
	}{{250, "HELO client.test"}, {250, "MAIL FROM:<sender@client.test>"}, {250, "RCPT TO:<" + rcpt + ">"}, {354, "DATA"}} {
		if err := step(s.code, "%s", s.cmd); err != nil {
			return banner, fmt.Errorf("%s: %w", s.cmd, err)
		}
	}
	w := tp.DotWriter()
	fmt.Fprintf(w, "From: sender@client.test\r\nTo: %s\r\nSubject: alias\r\nMessage-ID: %s\r\n\r\nTo the alias.\r\n", rcpt, msgID)
	if err := w.Close(); err != nil {
		return banner, err
	}
	if _, _, err := tp.ReadResponse(250); err != nil {
		return banner, fmt.Errorf("end of DATA: %w", err)
	}
	_ = step(221, "QUIT")
	return banner, nil
}
