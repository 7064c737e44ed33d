package kit

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/backstop-ha/backstop"
)

func init() { kinds[backstop.KindMail] = newMailProbe }

// mailProbe checks a mail system end to end: kind "mail", check-only.
// The quick check reads the SMTP greeting (220) and the IMAP greeting
// (* OK). The deep check sends a message through SMTP to rcpt, then logs
// in over IMAP as imap_user and waits for the message in INBOX (found by
// a unique Subject), and deletes it: what a user of the service does, so
// it fails when the queue manager, the delivery agent or the mailbox
// store is broken although both listeners answer.
//
// The IMAP side is a few commands of RFC 3501 (LOGIN, SELECT, SEARCH,
// STORE, EXPUNGE, LOGOUT) on net/textproto: no stable Go IMAP library is
// available to this project (emersion/go-imap v2 is a beta), and these
// commands need no literal or FETCH parsing.
type mailProbe struct {
	checkOnly
	smtpAddr, imapAddr string
	rcpt, user, pwFile string
}

func newMailProbe(r backstop.Resource, env Env) (Instance, error) {
	p := params{r}
	host, err := p.str("host", true)
	if err != nil {
		return nil, err
	}
	sp, err := p.integer("smtp_port", 25, 1, 65535)
	if err != nil {
		return nil, err
	}
	ip, err := p.integer("imap_port", 143, 1, 65535)
	if err != nil {
		return nil, err
	}
	k := &mailProbe{smtpAddr: net.JoinHostPort(host, strconv.Itoa(sp)), imapAddr: net.JoinHostPort(host, strconv.Itoa(ip))}
	if k.rcpt, err = p.str("rcpt", true); err != nil {
		return nil, err
	}
	if k.user, err = p.str("imap_user", true); err != nil {
		return nil, err
	}
	if k.pwFile, err = p.str("imap_password_file", true); err != nil {
		return nil, err
	}
	return k, nil
}

// Check reads both greetings (quick) or sends and reads back (deep).
func (k *mailProbe) Check(ctx context.Context, deep bool) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	if !deep {
		if err := greet(ctx, k.smtpAddr, "220 "); err != nil {
			return fmt.Errorf("mail: smtp %s: %w", k.smtpAddr, err)
		}
		if err := greet(ctx, k.imapAddr, "* OK"); err != nil {
			return fmt.Errorf("mail: imap %s: %w", k.imapAddr, err)
		}
		return nil
	}
	pw, err := os.ReadFile(k.pwFile)
	if err != nil {
		return fmt.Errorf("mail: imap password: %w", err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	token := "backstop-probe-" + hex.EncodeToString(b)
	if err := k.send(ctx, token); err != nil {
		return fmt.Errorf("mail: smtp %s: sending the probe message: %w", k.smtpAddr, err)
	}
	if err := k.readBack(ctx, strings.TrimSpace(string(pw)), token); err != nil {
		return fmt.Errorf("mail: imap %s: reading the probe message back: %w", k.imapAddr, err)
	}
	return nil
}

// dial connects with ctx's deadline on the connection too.
func dial(ctx context.Context, addr string) (net.Conn, func(), error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	return c, func() { stop(); c.Close() }, nil
}

func greet(ctx context.Context, addr, want string) error {
	c, done, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer done()
	l, err := textproto.NewReader(bufio.NewReader(c)).ReadLine()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(l, want) {
		return fmt.Errorf("greeting %q, want %q...", l, want)
	}
	return nil
}

func (k *mailProbe) send(ctx context.Context, token string) error {
	c, done, err := dial(ctx, k.smtpAddr)
	if err != nil {
		return err
	}
	defer done()
	host, _, _ := net.SplitHostPort(k.smtpAddr)
	s, err := smtp.NewClient(c, host)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Hello(ehloName()); err != nil {
		return err
	}
	from := "backstop-probe@" + ehloName()
	if err := s.Mail(from); err != nil {
		return err
	}
	if err := s.Rcpt(k.rcpt); err != nil {
		return err
	}
	w, err := s.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@backstop>\r\nDate: %s\r\n\r\nBackstop deep check; deleted once read.\r\n",
		from, k.rcpt, token, token, time.Now().Format(time.RFC1123Z))
	if err := w.Close(); err != nil {
		return err
	}
	_ = s.Quit()
	return nil
}

// imapConn runs tagged IMAP commands.
type imapConn struct {
	tp  *textproto.Conn
	seq int
}

// cmd sends one command and returns its untagged lines; an answer other
// than OK is an error quoting the server.
func (ic *imapConn) cmd(format string, a ...any) ([]string, error) {
	ic.seq++
	tag := "b" + strconv.Itoa(ic.seq)
	line := fmt.Sprintf(format, a...)
	if err := ic.tp.PrintfLine("%s %s", tag, line); err != nil {
		return nil, err
	}
	verb, _, _ := strings.Cut(line, " ")
	var untagged []string
	for {
		l, err := ic.tp.ReadLine()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", verb, err)
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			if !strings.HasPrefix(strings.ToUpper(rest), "OK") {
				return nil, fmt.Errorf("%s: %s", verb, rest)
			}
			return untagged, nil
		}
		untagged = append(untagged, l)
	}
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func (k *mailProbe) readBack(ctx context.Context, pw, token string) error {
	c, done, err := dial(ctx, k.imapAddr)
	if err != nil {
		return err
	}
	defer done()
	ic := &imapConn{tp: textproto.NewConn(c)}
	if l, err := ic.tp.ReadLine(); err != nil || !strings.HasPrefix(l, "* OK") {
		return fmt.Errorf("greeting %q: %v", l, err)
	}
	if _, err := ic.cmd("LOGIN %s %s", imapQuote(k.user), imapQuote(pw)); err != nil {
		return err
	}
	defer ic.cmd("LOGOUT")
	for {
		if _, err := ic.cmd("SELECT INBOX"); err != nil {
			return err
		}
		lines, err := ic.cmd("UID SEARCH HEADER Subject %s", imapQuote(token))
		if err != nil {
			return err
		}
		var uids []string
		for _, l := range lines {
			if rest, ok := strings.CutPrefix(l, "* SEARCH"); ok {
				uids = append(uids, strings.Fields(rest)...)
			}
		}
		if len(uids) > 0 {
			if _, err := ic.cmd("UID STORE %s +FLAGS.SILENT (\\Deleted)", strings.Join(uids, ",")); err != nil {
				return err
			}
			_, err := ic.cmd("EXPUNGE")
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("message %s not in %s's INBOX: %w", token, k.user, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
