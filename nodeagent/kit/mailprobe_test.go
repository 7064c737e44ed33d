package kit

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// fakeMail is an SMTP and an IMAP listener on loopback sharing one
// mailbox of subjects: enough of both protocols for the mail probe. The
// e2e tests run the probe against Postfix and Dovecot.
type fakeMail struct {
	smtp, imap net.Listener
	password   string
	deliver    atomic.Bool // false: SMTP accepts but nothing reaches the mailbox

	mu       sync.Mutex // mu guards the fields below
	box      []string   // subjects
	expunged int
}

func newFakeMail(t *testing.T, password string) *fakeMail {
	t.Helper()
	f := &fakeMail{password: password}
	f.deliver.Store(true)
	var err error
	if f.smtp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if f.imap, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.smtp.Close(); f.imap.Close() })
	go serve(f.smtp, f.smtpSession)
	go serve(f.imap, f.imapSession)
	return f
}

func serve(l net.Listener, h func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			h(c)
		}()
	}
}

func (f *fakeMail) smtpSession(c net.Conn) {
	r := bufio.NewReader(c)
	fmt.Fprint(c, "220 fake ESMTP\r\n")
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch verb := strings.ToUpper(strings.Fields(l + " x")[0]); verb {
		case "EHLO", "HELO", "MAIL", "RCPT", "NOOP":
			fmt.Fprint(c, "250 ok\r\n")
		case "DATA":
			fmt.Fprint(c, "354 go on\r\n")
			subject := ""
			for {
				d, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if d == ".\r\n" {
					break
				}
				if s, ok := strings.CutPrefix(d, "Subject: "); ok {
					subject = strings.TrimSpace(s)
				}
			}
			if f.deliver.Load() {
				f.mu.Lock()
				f.box = append(f.box, subject)
				f.mu.Unlock()
			}
			fmt.Fprint(c, "250 queued\r\n")
		case "QUIT":
			fmt.Fprint(c, "221 bye\r\n")
			return
		default:
			fmt.Fprint(c, "500 what\r\n")
		}
	}
}

func (f *fakeMail) imapSession(c net.Conn) {
	r := bufio.NewReader(c)
	fmt.Fprint(c, "* OK fake IMAP ready\r\n")
	var found []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		fields := strings.Fields(l)
		tag, cmd := fields[0], strings.ToUpper(strings.Join(fields[1:min(3, len(fields))], " "))
		switch {
		case strings.HasPrefix(cmd, "LOGIN"):
			if !strings.HasSuffix(strings.TrimSpace(l), `"`+f.password+`"`) {
				fmt.Fprintf(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", tag)
				continue
			}
			fmt.Fprintf(c, "%s OK Logged in\r\n", tag)
		case strings.HasPrefix(cmd, "SELECT"):
			fmt.Fprintf(c, "* 0 EXISTS\r\n%s OK [READ-WRITE] Select completed.\r\n", tag)
		case cmd == "UID SEARCH":
			want := strings.Trim(fields[len(fields)-1], `"`)
			f.mu.Lock()
			var uids []string
			for i, s := range f.box {
				if s == want {
					uids = append(uids, fmt.Sprint(i+1))
				}
			}
			f.mu.Unlock()
			found = uids
			fmt.Fprintf(c, "* SEARCH %s\r\n%s OK Search completed.\r\n", strings.Join(uids, " "), tag)
		case cmd == "UID STORE":
			fmt.Fprintf(c, "%s OK Store completed.\r\n", tag)
		case strings.HasPrefix(cmd, "EXPUNGE"):
			f.mu.Lock()
			f.expunged += len(found)
			f.mu.Unlock()
			fmt.Fprintf(c, "%s OK Expunge completed.\r\n", tag)
		case strings.HasPrefix(cmd, "LOGOUT"):
			fmt.Fprintf(c, "* BYE\r\n%s OK Logout completed.\r\n", tag)
			return
		default:
			fmt.Fprintf(c, "%s BAD unknown\r\n", tag)
		}
	}
}

func (f *fakeMail) probe(t *testing.T, password string) Instance {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, sp, _ := net.SplitHostPort(f.smtp.Addr().String())
	_, ip, _ := net.SplitHostPort(f.imap.Addr().String())
	inst, err := New(backstop.Resource{Name: "mailcheck", Kind: backstop.KindMail, Params: map[string]any{
		"host": "127.0.0.1", "smtp_port": sp, "imap_port": ip, "rcpt": "probe@test.example",
		"imap_user": "probe@test.example", "imap_password_file": pw,
	}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// TestMailProbe: the deep check sends, finds the message over IMAP and
// deletes it; it fails, saying why, on a refused login and on a message
// that never arrives; the quick check fails when IMAP does not answer.
func TestMailProbe(t *testing.T) {
	f := newFakeMail(t, "s3cret")
	inst := f.probe(t, "s3cret")
	if err := inst.Check(t.Context(), false); err != nil {
		t.Fatalf("quick check: %v", err)
	}
	if err := inst.Check(t.Context(), true); err != nil {
		t.Fatalf("deep check: %v", err)
	}
	f.mu.Lock()
	box, expunged := f.box, f.expunged
	f.mu.Unlock()
	if expunged != 1 || len(box) != 1 || !strings.HasPrefix(box[0], "backstop-probe-") {
		t.Fatalf("mailbox %v, %d expunged: want the probe message found and expunged", box, expunged)
	}
	if err := f.probe(t, "wrong").Check(t.Context(), true); err == nil || !strings.Contains(err.Error(), "LOGIN: NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("deep check with a wrong password: %v", err)
	}
	f.deliver.Store(false)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := inst.Check(ctx, true); err == nil || !strings.Contains(err.Error(), "imap") {
		t.Fatalf("deep check, message never delivered: %v", err)
	}
	f.imap.Close()
	if err := inst.Check(t.Context(), false); err == nil || !strings.Contains(err.Error(), "imap") {
		t.Fatalf("quick check with IMAP down: %v", err)
	}
}
