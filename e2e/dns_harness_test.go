//go:build linux

package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// The DNS server of the e2e tests: Debian's BIND (named), authoritative
// for zone dnsZone, accepting RFC 2136 updates signed with one TSIG key.
// It runs as a child process in the bridge namespace of the test network,
// on an address of its own (.2) given to the bridge: every node and the
// host reach it, and no node's crash or cut link takes it down.

const (
	namedBin = "/usr/sbin/named"
	dnsZone  = "test.example"
	dnsKey   = "backstop"
)

type bindServer struct {
	dir     string
	addr    string // ip:53
	keyFile string // the nodes' key file (tsig-keygen format)
	secret  string
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
}

// startBind starts named on the test network of top; t's cleanup kills it.
func startBind(t *testing.T, top *netTopology) *bindServer {
	t.Helper()
	if _, err := os.Stat(namedBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("needs BIND (apt-get install -y bind9): %v", err)
		}
		t.Skipf("needs BIND (apt-get install -y bind9): %v", err)
	}
	ip := top.subnet + ".2"
	ipCmd(t, "-n", top.lab.Bridge, "addr", "add", ip+"/24", "dev", "br0")
	// Under /var/lib/bind, where Debian's AppArmor profile of named lets
	// it read and write (a host with AppArmor enforcing would refuse it a
	// configuration in /tmp).
	dir, err := os.MkdirTemp("/var/lib/bind", "backstop-e2e-")
	if err != nil {
		t.Fatalf("named's directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &bindServer{dir: dir, addr: net.JoinHostPort(ip, "53"), out: &syncBuffer{}}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	b.secret = base64.StdEncoding.EncodeToString(raw)
	b.keyFile = b.writeKey(t, "nodes.key", b.secret)
	conf := fmt.Sprintf(`// Written by the e2e DNS harness (e2e/dns_harness_test.go).
options {
	directory "%[1]s";
	listen-on port 53 { %[2]s; };
	listen-on-v6 { none; };
	pid-file none;
	session-keyfile none;
	recursion no;
	dnssec-validation no;
	notify no;
};
key "%[3]s" { algorithm hmac-sha256; secret "%[4]s"; };
zone "%[5]s" {
	type primary;
	file "%[1]s/%[5]s.zone";
	update-policy { grant %[3]s zonesub A AAAA; };
};
`, dir, ip, dnsKey, b.secret, dnsZone)
	zone := fmt.Sprintf(`$TTL 60
@	IN SOA ns.%[1]s. hostmaster.%[1]s. 1 60 60 600 10
@	IN NS ns.%[1]s.
ns	IN A %[2]s
`, dnsZone, ip)
	for name, body := range map[string]string{"named.conf": conf, dnsZone + ".zone": zone} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// -g: foreground, log to stderr; -4: IPv4 only; no -u: root, in
	// this test directory only.
	cmd := exec.Command("ip", "netns", "exec", top.lab.Bridge, namedBin, "-g", "-4", "-c", filepath.Join(dir, "named.conf"))
	cmd.Stdout, cmd.Stderr = b.out, b.out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start named: %v", err)
	}
	b.cmd, b.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
		if t.Failed() {
			t.Logf("named log:\n%s", b.out.String())
		}
	})
	testkit.Eventually(t, 30*time.Second, "named answering for "+dnsZone, func() bool {
		select {
		case <-b.exited:
			t.Fatalf("named exited:\n%s", b.out.String())
		default:
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(dnsZone), dns.TypeSOA)
		r, _, err := (&dns.Client{Timeout: 500 * time.Millisecond}).Exchange(m, b.addr)
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
	})
	return b
}

// writeKey writes a key file as tsig-keygen does and returns its path.
func (b *bindServer) writeKey(t *testing.T, name, secret string) string {
	t.Helper()
	p := filepath.Join(b.dir, name)
	body := fmt.Sprintf("key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", dnsKey, secret)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wrongKey writes a key file with the right name and a wrong secret.
func (b *bindServer) wrongKey(t *testing.T) string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	return b.writeKey(t, "wrong.key", base64.StdEncoding.EncodeToString(raw))
}

// lookup returns the A records of name at the server, sorted as served
// ("" on error: NXDOMAIN, no answer).
func (b *bindServer) lookup(name string) string {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 300 * time.Millisecond}).Exchange(m, b.addr)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		return ""
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return strings.Join(out, ",")
}

// nameWatch polls the server every few milliseconds and records when the
// answer for a name changed: the time a client asking the server needs
// to see a move.
type nameWatch struct {
	mu      sync.Mutex // mu guards the fields below
	changes []nameChange
	stop    chan struct{}
	done    chan struct{}
}

type nameChange struct {
	at     time.Time
	answer string
}

func (b *bindServer) watch(name string) *nameWatch {
	w := &nameWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := "\x00"
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if a := b.lookup(name); a != last {
				last = a
				w.mu.Lock()
				w.changes = append(w.changes, nameChange{time.Now(), a})
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// firstSince returns when the answer first became want after t.
func (w *nameWatch) firstSince(t time.Time, want string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		if c.at.After(t) && c.answer == want {
			return c.at, true
		}
	}
	return time.Time{}, false
}

func (w *nameWatch) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}
