package kit

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/backstop-ha/backstop"
)

// zoneServer is a tiny authoritative server for one zone, in process:
// enough of RFC 2136 (prerequisite "RRset exists, value dependent",
// delete RRset, delete RR, add RR) and of TSIG (miekg/dns verifies, this
// answers NOTAUTH/BADSIG as BIND does) to test the name kit. The e2e tests
// run the kit against BIND itself.
type zoneServer struct {
	zone   string
	keys   map[string]string // TSIG key name → secret; nil: unsigned updates allowed
	addr   string
	srv    []*dns.Server
	mu     sync.Mutex // mu guards the fields below
	rrs    []dns.RR
	update int // updates applied
}

func newZoneServer(t *testing.T, zone string, keys map[string]string) *zoneServer {
	t.Helper()
	z := &zoneServer{zone: dns.Fqdn(zone), keys: keys}
	// One port for UDP and TCP: a free UDP port may be taken for TCP, so
	// try a few.
	var pc net.PacketConn
	var l net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatal(err)
		}
	}
	z.addr = pc.LocalAddr().String()
	var wg sync.WaitGroup
	wg.Add(2)
	for _, s := range []*dns.Server{
		{PacketConn: pc, TsigSecret: keys, Handler: z, NotifyStartedFunc: wg.Done},
		{Listener: l, TsigSecret: keys, Handler: z, NotifyStartedFunc: wg.Done},
	} {
		s.MsgAcceptFunc = acceptUpdates
		z.srv = append(z.srv, s)
		go s.ActivateAndServe()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range z.srv {
			s.Shutdown()
		}
	})
	return z
}

// acceptUpdates is miekg/dns's default acceptance, which refuses
// opcode UPDATE with NOTIMP, plus updates.
func acceptUpdates(dh dns.Header) dns.MsgAcceptAction {
	if int(dh.Bits>>11)&0xF == dns.OpcodeUpdate {
		return dns.MsgAccept
	}
	return dns.DefaultMsgAcceptFunc(dh)
}

func (z *zoneServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	z.mu.Lock()
	defer z.mu.Unlock()
	if req.Opcode == dns.OpcodeUpdate {
		z.applyLocked(w, req, m)
		return
	}
	m.Authoritative = true
	q := req.Question[0]
	for _, rr := range z.rrs {
		if strings.EqualFold(rr.Header().Name, q.Name) && rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	w.WriteMsg(m)
}

func (z *zoneServer) applyLocked(w dns.ResponseWriter, req, m *dns.Msg) {
	if z.keys != nil {
		t := req.IsTsig()
		if t == nil {
			m.Rcode = dns.RcodeRefused
			w.WriteMsg(m)
			return
		}
		if w.TsigStatus() != nil {
			// As BIND: NOTAUTH, the TSIG error in an unsigned TSIG record.
			m.Rcode = dns.RcodeNotAuth
			m.Extra = append(m.Extra, &dns.TSIG{Hdr: dns.RR_Header{Name: t.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
				Algorithm: t.Algorithm, TimeSigned: t.TimeSigned, Fudge: t.Fudge, OrigId: req.Id, Error: dns.RcodeBadSig})
			w.WriteMsg(m)
			return
		}
		m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
	}
	for _, p := range req.Answer { // prerequisites: value-dependent only
		found := false
		for _, rr := range z.rrs {
			c := dns.Copy(p)
			c.Header().Class, c.Header().Ttl = rr.Header().Class, rr.Header().Ttl
			if dns.IsDuplicate(c, rr) {
				found = true
			}
		}
		if !found {
			m.Rcode = dns.RcodeNXRrset
			w.WriteMsg(m)
			return
		}
	}
	for _, u := range req.Ns {
		h := u.Header()
		switch h.Class {
		case dns.ClassANY: // delete an RRset
			z.rrs = deleteRRs(z.rrs, func(rr dns.RR) bool {
				return strings.EqualFold(rr.Header().Name, h.Name) && rr.Header().Rrtype == h.Rrtype
			})
		case dns.ClassNONE: // delete one RR
			z.rrs = deleteRRs(z.rrs, func(rr dns.RR) bool {
				c := dns.Copy(u)
				c.Header().Class, c.Header().Ttl = rr.Header().Class, rr.Header().Ttl
				return dns.IsDuplicate(c, rr)
			})
		default:
			z.rrs = append(z.rrs, dns.Copy(u))
		}
	}
	z.update++
	w.WriteMsg(m)
}

func deleteRRs(rrs []dns.RR, match func(dns.RR) bool) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if !match(rr) {
			out = append(out, rr)
		}
	}
	return out
}

// records returns the zone's records of name as text, sorted as added.
func (z *zoneServer) records() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	var out []string
	for _, rr := range z.rrs {
		out = append(out, rr.String())
	}
	return out
}

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg==" // base64 of 32 bytes

func writeKey(t *testing.T, name, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.conf")
	body := "key \"" + name + "\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + secret + "\";\n};\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func nameResource(params map[string]any) backstop.Resource {
	return backstop.Resource{Name: "dnsname", Kind: backstop.KindName, Params: params}
}

// TestNameFollowsHolder: two nodes publish the same name in turn. The
// second's Start replaces the first's record (never two addresses); the
// first's late Stop leaves the second's record alone; checks see who
// holds it.
func TestNameFollowsHolder(t *testing.T) {
	z := newZoneServer(t, "test.example", map[string]string{"backstop.": testSecret})
	key := writeKey(t, "backstop", testSecret)
	ctx := t.Context()
	mk := func(addr string) Instance {
		t.Helper()
		inst, err := New(nameResource(map[string]any{"name": "mail.test.example", "zone": "test.example", "server": z.addr,
			"address": addr, "ttl": float64(7), "tsig_key_file": key}), Env{})
		if err != nil {
			t.Fatal(err)
		}
		return inst
	}
	n1, n2 := mk("198.18.1.50"), mk("198.18.1.51")
	if err := n1.Check(ctx, false); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("check before start: %v, want ErrNotRunning", err)
	}
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n1.Check(ctx, true); err != nil {
		t.Fatalf("deep check after start: %v", err)
	}
	if got := z.records(); len(got) != 1 || !strings.Contains(got[0], "\t7\tIN\tA\t198.18.1.50") {
		t.Fatalf("records after n1 start: %q", got)
	}
	if err := n2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := z.records(); len(got) != 1 || !strings.Contains(got[0], "198.18.1.51") {
		t.Fatalf("records after n2 start: %q, want only n2's", got)
	}
	if err := n1.Check(ctx, false); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "198.18.1.51") {
		t.Fatalf("n1 check once n2 holds the name: %v, want ErrNotRunning naming 198.18.1.51", err)
	}
	// n1's late take-down must not remove n2's record.
	if err := n1.Stop(ctx); err != nil {
		t.Fatalf("n1 stop: %v", err)
	}
	if got := z.records(); len(got) != 1 || !strings.Contains(got[0], "198.18.1.51") {
		t.Fatalf("records after n1's late stop: %q, want n2's still there", got)
	}
	if err := n2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := z.records(); len(got) != 0 {
		t.Fatalf("records after n2 stop: %q, want none", got)
	}
	if err := n2.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if err := n2.Fence(); err != nil {
		t.Fatal(err)
	}
}

// TestNameWrongKey: a key the server does not know fails Start with the
// server's reason, and changes nothing.
func TestNameWrongKey(t *testing.T) {
	z := newZoneServer(t, "test.example", map[string]string{"backstop.": testSecret})
	bad := writeKey(t, "backstop", "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmcx")
	inst, err := New(nameResource(map[string]any{"name": "mail.test.example", "zone": "test.example", "server": z.addr,
		"address": "198.18.1.50", "tsig_key_file": bad}), Env{})
	if err != nil {
		t.Fatal(err)
	}
	err = inst.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "NOTAUTH") || !strings.Contains(err.Error(), "BADSIG") {
		t.Fatalf("start with a wrong key: %v, want a refusal naming NOTAUTH and BADSIG", err)
	}
	if got := z.records(); len(got) != 0 {
		t.Fatalf("records after a refused update: %q", got)
	}
	// The rollback of that refused bring-up stops the name: the server
	// refuses that too, and Stop succeeds (logged), so the rollback is
	// clean.
	if err := inst.Stop(t.Context()); err != nil {
		t.Fatalf("stop after a refused start: %v, want nil", err)
	}
	// Unsigned, to a server that wants TSIG.
	inst, _ = New(nameResource(map[string]any{"name": "mail.test.example", "zone": "test.example", "server": z.addr, "address": "198.18.1.50"}), Env{})
	if err := inst.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "REFUSED") {
		t.Fatalf("unsigned start: %v, want REFUSED", err)
	}
}

// TestNameDeepCheck: the deep check sees a TTL changed behind the kit's
// back and a second address added to the name.
func TestNameDeepCheck(t *testing.T) {
	z := newZoneServer(t, "test.example", nil)
	inst, err := New(nameResource(map[string]any{"name": "mail.test.example.", "zone": "test.example", "server": z.addr, "address": "198.18.1.50", "ttl": float64(30)}), Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	z.mu.Lock()
	z.rrs[0].Header().Ttl = 3600
	z.mu.Unlock()
	if err := inst.Check(ctx, false); err != nil {
		t.Fatalf("quick check ignores the TTL: %v", err)
	}
	if err := inst.Check(ctx, true); err == nil || !strings.Contains(err.Error(), "TTL") {
		t.Fatalf("deep check with a wrong TTL: %v", err)
	}
	if err := inst.Start(ctx); err != nil { // restart repairs it
		t.Fatal(err)
	}
	rr, _ := dns.NewRR("mail.test.example. 30 IN A 198.18.1.99")
	z.mu.Lock()
	z.rrs = append(z.rrs, rr)
	z.mu.Unlock()
	if err := inst.Check(ctx, true); err == nil || !strings.Contains(err.Error(), "not only") {
		t.Fatalf("deep check with a second address: %v", err)
	}
}

// TestNameNodeAddress: without address, the name points at the address
// this node reaches the server from.
func TestNameNodeAddress(t *testing.T) {
	z := newZoneServer(t, "test.example", nil)
	inst, err := New(nameResource(map[string]any{"name": "node.test.example", "zone": "test.example", "server": z.addr}), Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := z.records(); len(got) != 1 || !strings.Contains(got[0], "127.0.0.1") {
		t.Fatalf("records: %q, want the loopback address the test reaches the server from", got)
	}
}

// TestNameServerDown: an unreachable server fails Start within the
// context's deadline, with the server named.
func TestNameServerDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	inst, err := New(nameResource(map[string]any{"name": "mail.test.example", "zone": "test.example", "server": addr, "address": "198.18.1.50"}), Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := inst.Start(ctx); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("start with no server: %v", err)
	}
}

// TestNameCheckServerGone: once published, a server that stops answering
// does not fail the checks (a DNS outage must not fail the hierarchy
// over), but a server that answers with another address does.
func TestNameCheckServerGone(t *testing.T) {
	z := newZoneServer(t, "test.example", nil)
	inst, err := New(nameResource(map[string]any{"name": "mail.test.example", "zone": "test.example", "server": z.addr, "address": "198.18.1.50"}), Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	z.mu.Lock()
	z.rrs[0].(*dns.A).A = net.ParseIP("198.18.1.99")
	z.mu.Unlock()
	if err := inst.Check(t.Context(), false); err == nil {
		t.Fatal("quick check passed with the name pointing elsewhere")
	}
	for _, s := range z.srv {
		s.Shutdown()
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	for _, deep := range []bool{false, true} {
		if err := inst.Check(ctx, deep); err != nil {
			t.Errorf("check (deep %v) with the server gone: %v, want nil (logged)", deep, err)
		}
	}
	if err := inst.Stop(ctx); err != nil {
		t.Errorf("stop with the server gone: %v, want nil (logged): a DNS outage must not make a take-down unclean", err)
	}
}

func TestNameParams(t *testing.T) {
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"zone": "test.example", "server": "127.0.0.1"}, "name: required"},
		{map[string]any{"name": "mail.other.example", "zone": "test.example", "server": "127.0.0.1"}, "not inside zone"},
		{map[string]any{"name": "test.example", "zone": "test.example", "server": "127.0.0.1"}, "not inside zone"},
		{map[string]any{"name": "mail.test.example", "zone": "test.example", "server": "127.0.0.1", "address": "198.18.1.50/24"}, "address"},
		{map[string]any{"name": "mail.test.example", "zone": "test.example", "server": "127.0.0.1", "ttl": float64(0)}, "ttl"},
	} {
		if _, err := New(nameResource(tc.params), Env{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.params, err, tc.want)
		}
	}
}
