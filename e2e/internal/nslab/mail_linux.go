package nslab

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Mail is the mail service of the demo (e2e/cmd/demo): Debian's Postfix
// with a configuration directory of its own and its queue, logs and
// mailboxes on a volume, behind a virtual IP. It is the recipe of the e2e
// mail tests (e2e/mail_harness_test.go, which is test code and cannot be
// imported) and of the shared notes on mail in namespaces:
//
//	Dir/conf  main.cf and master.cf, the same for every node
//	Dir/vol   the volume's source: spool/, data/, log/, vmail/
//	Dir/mnt   the volume's target, bind-mounted on the active node only
type Mail struct {
	Dir  string
	VIP  string
	Rcpt string
}

// PostfixBin is Debian's postfix(1).
const PostfixBin = "/usr/sbin/postfix"

// NewMail creates the directories under dir (made 0755: the postfix user
// must traverse it) and writes the configuration for vip on the /24 of
// subnet ("198.19.K").
func NewMail(dir, vip, subnet string) (*Mail, error) {
	if _, err := os.Stat(PostfixBin); err != nil {
		return nil, fmt.Errorf("needs Postfix (apt-get install -y postfix): %w", err)
	}
	m := &Mail{Dir: dir, VIP: vip, Rcpt: "alice@test.example"}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{m.conf(), m.mnt(), m.vol("spool"), m.vol("data"), m.vol("log"), m.vol("vmail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	pc := PostfixConfig{Domain: "test.example", VIP: vip, Subnet: subnet, Rcpt: m.Rcpt,
		Spool: m.mntPath("spool"), Data: m.mntPath("data"), Log: m.mntPath("log"), VMail: m.mntPath("vmail"),
		Origin: "the Backstop demo (e2e/internal/nslab/mail_linux.go)"}
	if err := pc.Write(m.conf()); err != nil {
		return nil, err
	}
	if err := PreparePostfixVolume(m.vol("data"), m.vol("log"), m.vol("vmail")); err != nil {
		return nil, err
	}
	return m, nil
}

// PostfixConfig is the Postfix of the demo and the e2e mail tests
// (the shared notes' recipe, section 2): one virtual Maildir mailbox,
// listening on the virtual IP only, no outbound mail, fast retries. The
// paths are what Postfix sees (under the volume's target).
type PostfixConfig struct {
	// Domain is the mail domain (virtual mailbox domain); myhostname is
	// mail.Domain.
	Domain string
	// VIP is inet_interfaces: Postfix refuses to start where it is
	// absent, so the ip resource comes up first (and goes down last).
	VIP string
	// Subnet ("198.19.K") gives mynetworks its /24.
	Subnet string
	// Rcpt is the one mailbox (delivered to VMail/alice/).
	Rcpt string
	// Spool (queue_directory), Data (data_directory), Log (maillog_file's
	// directory) and VMail (virtual_mailbox_base).
	Spool, Data, Log, VMail string
	// Origin says who wrote the file, in its first comment.
	Origin string
}

// MainCF is the text of main.cf.
func (c PostfixConfig) MainCF() string {
	return fmt.Sprintf(`# Written by %[9]s.
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
maillog_file = %[3]s/maillog
maillog_file_prefixes = %[3]s
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
command_directory = /usr/sbin
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
# Only the virtual IP: Postfix refuses to start where it is absent, so the
# ip resource is brought up first (and taken down last).
inet_interfaces = %[4]s
inet_protocols = ipv4
myhostname = mail.%[5]s
mydomain = %[5]s
mydestination = $myhostname, localhost
mynetworks = 127.0.0.0/8 %[6]s.0/24
relayhost =
disable_dns_lookups = yes
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
default_transport = error:outbound disabled
relay_transport = error:outbound disabled
virtual_mailbox_domains = %[5]s
virtual_mailbox_base = %[7]s
virtual_mailbox_maps = inline:{ %[8]s=alice/ }
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
alias_maps =
alias_database =
local_recipient_maps =
biff = no
# A deferred delivery is retried within seconds, not minutes: the tests
# wait for the queue to drain.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
`, c.Spool, c.Data, c.Log, c.VIP, c.Domain, c.Subnet, c.VMail, c.Rcpt, c.Origin)
}

// Write writes main.cf and Debian's master.cf into dir, with every
// service's chroot off (Debian's master.cf chroots smtpd and friends into
// the queue directory; without it nothing needs copying into it).
func (c PostfixConfig) Write(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(c.MainCF()), 0o644); err != nil {
		return err
	}
	b, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return fmt.Errorf("Debian's master.cf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.cf"), b, 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("postconf", "-c", dir, "-F", "*/*/chroot = n").CombinedOutput(); err != nil {
		return fmt.Errorf("postconf -F: %v: %s", err, out)
	}
	return nil
}

// PreparePostfixVolume gives the volume's directories (host view) the
// ownership Postfix wants: data_directory, the log directory and an empty
// maillog the postfix user's, the mailboxes the virtual delivery uid's
// (65534).
//
// The log directory and maillog must be the postfix user's: `postfix
// start` runs postsuper as that user, and after a crash postsuper finds
// the temporary file of a cleanup process killed mid-message in incoming/
// ("bogus file name"), logs a warning straight to maillog_file, and dies
// if it cannot open it for writing ("open logfile ...: Permission
// denied"), so the start fails on every node in turn (measured: a
// root-owned maillog made 2 of 6 runs fail the hierarchy after a crash).
func PreparePostfixVolume(data, log, vmail string) error {
	maillog := filepath.Join(log, "maillog")
	if err := os.WriteFile(maillog, nil, 0o644); err != nil {
		return err
	}
	for _, p := range []string{data, log, maillog} {
		if out, err := exec.Command("chown", "postfix:postfix", p).CombinedOutput(); err != nil {
			return fmt.Errorf("chown: %v: %s", err, out)
		}
	}
	return os.Chown(vmail, 65534, 65534)
}

func (m *Mail) conf() string { return filepath.Join(m.Dir, "conf") }
func (m *Mail) mnt() string  { return filepath.Join(m.Dir, "mnt") }

func (m *Mail) vol(parts ...string) string {
	return filepath.Join(append([]string{m.Dir, "vol"}, parts...)...)
}

func (m *Mail) mntPath(parts ...string) string {
	return filepath.Join(append([]string{m.mnt()}, parts...)...)
}

// Resources is the hierarchy: the virtual IP ← the volume ← Postfix ← an
// SMTP probe through the VIP.
func (m *Mail) Resources() []map[string]any {
	return []map[string]any{
		{"name": "vip", "kind": "ip", "params": map[string]any{"address": m.VIP + "/24", "interface": "eth0", "backup_interfaces": []string{"eth1"}}},
		{"name": "mailvol", "kind": "volume", "params": map[string]any{"source": m.vol(), "target": m.mnt()}, "depends_on": []string{"vip"}},
		{"name": "postfix", "kind": "service", "params": map[string]any{
			"start":           PostfixBin + " -c " + m.conf() + " start",
			"pid_file":        m.mntPath("spool", "pid", "master.pid"),
			"stop_timeout_ms": 5000,
		}, "depends_on": []string{"mailvol"},
			"quick_check":    map[string]any{"interval_ms": 500, "timeout_ms": 250},
			"local_recovery": map[string]any{"max_restarts": 2, "window_s": 300}},
		{"name": "smtp", "kind": "smtp", "params": map[string]any{"host": m.VIP, "port": 25}, "depends_on": []string{"postfix"},
			"quick_check":    map[string]any{"interval_ms": 1000, "timeout_ms": 500},
			"deep_check":     map[string]any{"interval_ms": 3000, "timeout_ms": 1500},
			"local_recovery": map[string]any{"max_restarts": 3, "window_s": 300}},
	}
}

// Delivered counts the messages in the mailbox (host view of the volume).
func (m *Mail) Delivered() int {
	n := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(m.vol("vmail", "alice", sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		n += len(ents)
	}
	return n
}

// Sender sends a message to the VIP every interval, one SMTP session
// each, and counts what the server accepted (250 after DATA).
type Sender struct {
	m        *Mail
	every    time.Duration
	mu       sync.Mutex
	accepted int
	failed   int
	lastOK   time.Time
	lastErr  string
	stop     chan struct{}
	done     chan struct{}
}

// StartSender starts sending.
func (m *Mail) StartSender(every time.Duration) *Sender {
	s := &Sender{m: m, every: every, stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *Sender) loop() {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for seq := 1; ; seq++ {
		err := s.send(seq)
		s.mu.Lock()
		if err == nil {
			s.accepted++
			s.lastOK = time.Now()
		} else {
			s.failed++
			s.lastErr = err.Error()
		}
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *Sender) send(seq int) error {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(s.m.VIP, "25"), 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	c, err := smtp.NewClient(conn, s.m.VIP)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("demo@client.test"); err != nil {
		return err
	}
	if err := c.Rcpt(s.m.Rcpt); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Message-ID: <demo%06d@client.test>\r\nSubject: demo %d\r\n\r\nmessage %d\r\n", seq, seq, seq)
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// Counts returns how many messages were accepted and how many attempts
// failed, and the last failure.
func (s *Sender) Counts() (accepted, failed int, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, s.failed, strings.TrimSpace(s.lastErr)
}

// LastOK is when a message was last accepted (zero: never).
func (s *Sender) LastOK() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastOK
}

// Stop stops sending and waits for the loop.
func (s *Sender) Stop() {
	close(s.stop)
	<-s.done
}
