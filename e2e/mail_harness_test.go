//go:build linux

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backstop-ha/backstop/e2e/internal/nslab"
)

// The mail service of the e2e tests: Debian's Postfix with a configuration
// directory of its own, its queue and mailboxes on a volume. The recipe and
// its pitfalls are measured in the shared notes (mail and OCF in
// namespaces, sections 2 and 3).
//
// Layout, under one 0755 directory (the postfix user must traverse it):
//
//	conf/  main.cf and master.cf: ONE configuration directory that every
//	       node uses (it lives on the host, outside the volume, so that
//	       each node's Postfix is configured identically) — unless the
//	       nodes get their own (nodeBinds): then conf-nodeN/ is bind-
//	       mounted on conf/ in node N, as each machine has its own
//	       /etc/postfix, and confToNodes copies conf/ into each
//	vol/   the volume's source: spool/ (queue_directory), data/
//	       (data_directory: master.lock), log/ (maillog_file) and vmail/
//	       (virtual Maildir mailboxes)
//	mnt/   the volume's target: empty on the host and on passive nodes;
//	       the volume kit bind-mounts vol/ here in the active node's
//	       private mount namespace, where its Postfix runs
//
// main.cf names only mnt/ paths, so Postfix reads and writes its queue
// only through the mount: a node without the volume cannot run it.
type mailSetup struct {
	dir    string
	conf   string
	volume string
	target string
	vip    string
	rcpt   string // the one mailbox
}

const (
	mailDomain = "test.example"
	mailRcpt   = "alice@" + mailDomain
	postfixBin = "/usr/sbin/postfix"
)

// newMailDir creates the directories (empty) and removes them when t
// ends. Call it before newNSCluster, so that the removal runs after the
// nodes (and their Postfix processes) are gone.
func newMailDir(t *testing.T) *mailSetup {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat(postfixBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("needs Postfix (apt-get install -y postfix): %v", err)
		}
		t.Skipf("needs Postfix (apt-get install -y postfix): %v", err)
	}
	dir, err := os.MkdirTemp("", "backstop-mail-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // MkdirTemp gives 0700
		t.Fatal(err)
	}
	m := &mailSetup{dir: dir, conf: filepath.Join(dir, "conf"), volume: filepath.Join(dir, "vol"), target: filepath.Join(dir, "mnt"), rcpt: mailRcpt}
	for _, d := range []string{m.conf, m.target, m.volume, m.vol("spool"), m.vol("data"), m.vol("log"), m.vol("vmail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// nodeBinds gives each of n nodes a configuration directory of its own
// (conf-nodeN, empty until confToNodes), bind-mounted on conf/ in its
// mount namespace: pass it to newNSClusterWith.
func (m *mailSetup) nodeBinds(t *testing.T, n int) func(i int) [][2]string {
	t.Helper()
	for i := range n {
		if err := os.MkdirAll(m.nodeConf(i), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return func(i int) [][2]string { return [][2]string{{m.nodeConf(i), m.conf}} }
}

// nodeConf returns (the host's view of) node i's configuration directory.
func (m *mailSetup) nodeConf(i int, parts ...string) string {
	return filepath.Join(append([]string{m.dir, fmt.Sprintf("conf-node%d", i+1)}, parts...)...)
}

// confToNodes copies the files of conf/ into every node's own directory,
// keeping their modes.
func (m *mailSetup) confToNodes(t *testing.T, n int) {
	t.Helper()
	ents, err := os.ReadDir(m.conf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		for _, e := range ents {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(m.conf, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(m.nodeConf(i, e.Name()), b, info.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// vol returns a path in the volume's source (the host's view).
func (m *mailSetup) vol(parts ...string) string {
	return filepath.Join(append([]string{m.volume}, parts...)...)
}

// mnt returns a path under the volume's target (what Postfix sees).
func (m *mailSetup) mnt(parts ...string) string {
	return filepath.Join(append([]string{m.target}, parts...)...)
}

// configure writes the Postfix configuration for vip on the test network
// subnet ("198.19.K").
func (m *mailSetup) configure(t *testing.T, vip, subnet string) {
	t.Helper()
	m.vip = vip
	pc := nslab.PostfixConfig{Domain: mailDomain, VIP: vip, Subnet: subnet, Rcpt: m.rcpt,
		Spool: m.mnt("spool"), Data: m.mnt("data"), Log: m.mnt("log"), VMail: m.mnt("vmail"),
		Origin: "the e2e mail test; see e2e/mail_harness_test.go"}
	if err := pc.Write(m.conf); err != nil {
		t.Fatal(err)
	}
	if err := nslab.PreparePostfixVolume(m.vol("data"), m.vol("log"), m.vol("vmail")); err != nil {
		t.Fatal(err)
	}
}

// resources is the hierarchy: the virtual IP ← the volume ← Postfix ←
// an SMTP probe through the VIP (quick: 220 greeting; deep: EHLO + NOOP).
//
// Postfix runs under the service kit: `postfix -c conf start` daemonizes,
// the master's pid file on the volume names the service (its process
// group: the master calls setsid), and the kit fences it by SIGKILL of
// that group in milliseconds. There is no stop command on purpose: the
// kit's stop sends SIGTERM to the master (what `postfix stop` does) and
// polls every 10 ms for it to exit, whereas postfix-script's stop checks
// right after its kill and, when the master has not exited yet (2 of 8
// switchovers measured here), sleeps a whole second before looking again. The
// ocf kit with ocf:heartbeat:postfix works too (the notes, section 4),
// but its start sleeps a fixed second and its fence is a stop that needs
// the VIP still present.
func (m *mailSetup) resources() []map[string]any {
	conf := m.conf
	return []map[string]any{
		{"name": "vip", "kind": "ip", "params": map[string]any{"address": m.vip + "/24", "interface": "eth0", "backup_interfaces": []string{"eth1"}}},
		{"name": "mailvol", "kind": "volume", "params": map[string]any{"source": m.volume, "target": m.target}, "depends_on": []string{"vip"}},
		{"name": "postfix", "kind": "service", "params": map[string]any{
			"start":           postfixBin + " -c " + conf + " start",
			"pid_file":        m.mnt("spool", "pid", "master.pid"),
			"stop_timeout_ms": 5000,
		}, "depends_on": []string{"mailvol"},
			"quick_check":    map[string]any{"interval_ms": 500, "timeout_ms": 250},
			"local_recovery": map[string]any{"max_restarts": 2, "window_s": 300}},
		{"name": "smtp", "kind": "smtp", "params": map[string]any{"host": m.vip, "port": 25}, "depends_on": []string{"postfix"},
			"quick_check":    map[string]any{"interval_ms": 1000, "timeout_ms": 500},
			"deep_check":     map[string]any{"interval_ms": 3000, "timeout_ms": 1500},
			"local_recovery": map[string]any{"max_restarts": 3, "window_s": 300}},
	}
}

// createMailHierarchy creates the mail hierarchy with prios (node
// indexes, priority 1 first) and returns its id.
func (nc *nsCluster) createMailHierarchy(name string, m *mailSetup, prios []int) string {
	nc.t.Helper()
	var ps []map[string]any
	for i, n := range prios {
		ps = append(ps, map[string]any{"node_id": nc.nodes[n], "priority": i + 1})
	}
	var h struct {
		ID string `json:"id"`
	}
	nc.c.do(nc.t, "POST", "/v1/clusters/"+nc.id+"/hierarchies", map[string]any{
		"name": name, "resources": m.resources(), "priorities": ps,
	}).must(nc.t, 201).decode(nc.t, &h)
	return h.ID
}

// mailbox reads the Maildir (host view of the volume) and returns how
// many copies of each Message-ID it holds.
func (m *mailSetup) mailbox() (map[string]int, error) {
	out := map[string]int{}
	for _, sub := range []string{"new", "cur"} {
		d := m.vol("vmail", "alice", sub)
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			id, err := messageID(filepath.Join(d, e.Name()))
			if err != nil {
				return nil, err
			}
			out[id]++
		}
	}
	return out, nil
}

// messageID returns the Message-ID header of a stored message.
func messageID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		l := s.Text()
		if l == "" {
			break // end of the headers
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Message-ID") {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no Message-ID header", path)
}

// queued counts the files in Postfix's queue (host view): complete
// queue files (Postfix sets their owner-execute bit once the message is
// safely written, before it answers 250) and incomplete ones, which a
// process killed while receiving a message leaves behind and Postfix
// ignores (that message was never acknowledged).
func (m *mailSetup) queued() (complete, incomplete []string) {
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		_ = filepath.WalkDir(m.vol("spool", q), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(m.vol("spool"), p)
			if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o100 != 0 {
				complete = append(complete, rel)
			} else {
				incomplete = append(incomplete, rel)
			}
			return nil
		})
	}
	return complete, incomplete
}

// maillogLines returns the maillog lines that contain any of subs.
func (m *mailSetup) maillogLines(subs ...string) []string {
	b, _ := os.ReadFile(m.vol("log", "maillog"))
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		for _, s := range subs {
			if s != "" && strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// logs returns the end of the maillog and of each agent's service.log,
// for a failing test.
func (m *mailSetup) logs(nc *nsCluster) string {
	var b strings.Builder
	tail := func(path string, n int) {
		data, err := os.ReadFile(path)
		if err != nil {
			return
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", path, len(lines), strings.Join(lines, "\n"))
	}
	tail(m.vol("log", "maillog"), 60)
	for _, a := range nc.agents {
		_ = filepath.WalkDir(a.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "service.log" {
				tail(p, 20)
			}
			return nil
		})
	}
	return b.String()
}

// mailClient sends mail to the VIP continuously, one message per SMTP
// session, and retries each message until the server accepts it (250
// after DATA), the way an MTA's queue does, only faster (mailRetryGap).
// A message keeps its Message-ID across retries, so a retry of a message
// whose acceptance was lost in a fault shows as a duplicate.
type mailClient struct {
	addr, rcpt, run string
	// resolve, when set, gives the address of each session (a client
	// that addresses the service by name); addr is its port then.
	resolve func() (string, error)

	mu       sync.Mutex
	accepted []acceptedMail // in acceptance order
	failures []time.Time    // failed attempts
	lastErr  string

	attempts atomic.Int64
	stop     chan struct{}
	done     chan struct{}
}

type acceptedMail struct {
	id string
	at time.Time // the 250 after DATA arrived
}

const (
	mailDialTimeout = 300 * time.Millisecond
	mailStepTimeout = time.Second
	mailRetryGap    = 20 * time.Millisecond
	mailSendGap     = 15 * time.Millisecond // between messages: ~40 messages/s
)

func startMailClient(addr, rcpt string) *mailClient {
	return startMailClientBy(addr, rcpt, nil)
}

// startMailClientBy starts a client that resolves the server's address
// with resolve before each session and connects to its port.
func startMailClientBy(port, rcpt string, resolve func() (string, error)) *mailClient {
	c := &mailClient{addr: port, rcpt: rcpt, resolve: resolve, run: strconv.FormatInt(time.Now().UnixNano(), 36),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.loop()
	return c
}

func (c *mailClient) loop() {
	defer close(c.done)
	for seq := 1; ; seq++ {
		id := fmt.Sprintf("<m%06d.%s@client.test>", seq, c.run)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			c.attempts.Add(1)
			err := c.send(id, seq)
			now := time.Now()
			c.mu.Lock()
			if err == nil {
				c.accepted = append(c.accepted, acceptedMail{id: id, at: now})
			} else {
				c.failures = append(c.failures, now)
				c.lastErr = err.Error()
			}
			c.mu.Unlock()
			if err == nil {
				break
			}
			time.Sleep(mailRetryGap)
		}
		time.Sleep(mailSendGap)
	}
}

// send runs one SMTP session delivering message seq; nil means the
// server answered 250 to the end of DATA. Every step (greeting, EHLO,
// MAIL, RCPT, DATA, the message) must answer within mailStepTimeout: a
// session cut by a fault (a crashed node sends no RST) fails then and is
// retried, instead of hanging for an MTA's usual minutes.
func (c *mailClient) send(id string, seq int) error {
	addr := c.addr
	if c.resolve != nil {
		host, err := c.resolve()
		if err != nil {
			return err
		}
		addr = net.JoinHostPort(host, c.addr)
	}
	tc, err := net.DialTimeout("tcp", addr, mailDialTimeout)
	if err != nil {
		return err
	}
	defer tc.Close()
	conn, err := noSigpipe(tc.(*net.TCPConn))
	if err != nil {
		return err
	}
	step := func() { _ = conn.SetDeadline(time.Now().Add(mailStepTimeout)) }
	step()
	host, _, _ := net.SplitHostPort(addr)
	s, err := smtp.NewClient(conn, host) // reads the greeting
	if err != nil {
		return err
	}
	defer s.Close()
	step()
	if err := s.Hello("client.test"); err != nil {
		return err
	}
	step()
	if err := s.Mail("sender@client.test"); err != nil {
		return err
	}
	step()
	if err := s.Rcpt(c.rcpt); err != nil {
		return err
	}
	step()
	w, err := s.Data()
	if err != nil {
		return err
	}
	step()
	fmt.Fprintf(w, "From: sender@client.test\r\nTo: %s\r\nSubject: message %d\r\nMessage-ID: %s\r\nDate: %s\r\n\r\nMessage %d of run %s.\r\n",
		c.rcpt, seq, id, time.Now().Format(time.RFC1123Z), seq, c.run)
	if err := w.Close(); err != nil { // reads the reply to the final dot
		return err
	}
	step()
	_ = s.Quit() // accepted already; the reply to QUIT does not matter
	return nil
}

// halt stops the client after its current attempt.
func (c *mailClient) halt() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// acceptedSince returns the acceptance times of messages accepted after t.
func (c *mailClient) acceptedSince(t time.Time) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for i := len(c.accepted) - 1; i >= 0 && c.accepted[i].at.After(t); i-- {
		out = append(out, c.accepted[i].at)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// failuresBetween counts failed attempts in [from, to].
func (c *mailClient) failuresBetween(from, to time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.failures {
		if !f.Before(from) && !f.After(to) {
			n++
		}
	}
	return n
}

// acceptedIDs returns the Message-IDs the server accepted.
func (c *mailClient) acceptedIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.accepted))
	for i, a := range c.accepted {
		out[i] = a.id
	}
	return out
}

func (c *mailClient) lastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// noSigpipeConn is a TCP connection whose writes never raise SIGPIPE.
//
// A write to a connection the peer has reset (Postfix killed by a fault)
// fails with EPIPE and makes the kernel send SIGPIPE; because TestMain
// asks for SIGPIPE (removeOnSignal, for `go test | head`), Go delivers it
// there whatever the descriptor, and the whole test binary exits at once
// without its cleanups, leaving namespaces behind (seen once here). Sent
// with MSG_NOSIGNAL, the write just fails with EPIPE and the client
// retries the message.
type noSigpipeConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func noSigpipe(c *net.TCPConn) (*noSigpipeConn, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &noSigpipeConn{TCPConn: c, raw: raw}, nil
}

// Write sends p with MSG_NOSIGNAL, waiting for the socket (within the
// write deadline) when its buffer is full.
func (c *noSigpipeConn) Write(p []byte) (int, error) {
	done := 0
	var serr error
	err := c.raw.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, err := unix.SendmsgN(int(fd), p[done:], nil, nil, unix.MSG_NOSIGNAL)
			if errors.Is(err, unix.EAGAIN) {
				return false // wait until writable
			}
			if err != nil {
				serr = err
				return true
			}
			done += n
		}
		return true
	})
	if serr != nil {
		return done, &net.OpError{Op: "write", Net: "tcp", Addr: c.RemoteAddr(), Err: serr}
	}
	return done, err
}
