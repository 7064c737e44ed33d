package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/backstop-ha/backstop"
)

func init() { kinds[backstop.KindName] = newName }

const (
	// defaultNameTTL is the TTL of the published record when ttl is not
	// given: short, so that resolvers that cached the old holder's address
	// ask again within seconds of a failover.
	defaultNameTTL = 10
	// dnsExchangeTimeout bounds one DNS exchange when the caller's context
	// has no deadline.
	dnsExchangeTimeout = 3 * time.Second
	// tsigFudge is the TSIG time window in seconds (RFC 8945 recommends
	// 300).
	tsigFudge = 300
)

// nameKit is a DNS name that follows the hierarchy: kind "name".
//
// Start points Name at Address (the virtual IP) — or, when no address is
// given, at the address this node uses to reach the server — with one RFC
// 2136 dynamic update to the zone's primary server: the name's whole
// RRset of that type (A for IPv4, AAAA for IPv6) is deleted and the one
// record added, atomically, so the previous holder's record goes in the
// same transaction. The update is signed with TSIG when tsig_key_file
// names a key file (the format tsig-keygen writes). Start then reads the
// record back from the server.
//
// Stop deletes the record only if it still holds this node's address: a
// prerequisite makes the server refuse the deletion (NXRRSET) when another
// node already published its own, so a late take-down can never remove
// the new holder's name. A deletion the server does not answer or refuses
// is logged, and Stop still succeeds.
//
// Fence does nothing: it runs when the node is cut off and could not
// reach the server anyway, and the node that takes over replaces the
// record with its own update.
type nameKit struct {
	desc    string // "name mail.example.com", the prefix of every error
	name    string // FQDN, with the final dot
	zone    string // FQDN
	zoneN   string // zone without the final dot, for messages
	server  string // host:port
	address netip.Addr
	ttl     uint32
	keyFile string
	log     *slog.Logger
}

func newName(r backstop.Resource, env Env) (Instance, error) {
	p := params{r}
	name, err := p.str("name", true)
	if err != nil {
		return nil, err
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, p.errorf("name", "%q is not a domain name", name)
	}
	zone, err := p.str("zone", true)
	if err != nil {
		return nil, err
	}
	if _, ok := dns.IsDomainName(zone); !ok {
		return nil, p.errorf("zone", "%q is not a domain name", zone)
	}
	name, zone = dns.CanonicalName(name), dns.CanonicalName(zone)
	if !dns.IsSubDomain(zone, name) || name == zone {
		return nil, p.errorf("name", "%s is not inside zone %s", name, zone)
	}
	server, err := p.str("server", true)
	if err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	k := &nameKit{
		desc:   "name " + strings.TrimSuffix(name, "."),
		zoneN:  strings.TrimSuffix(zone, "."),
		name:   name,
		zone:   zone,
		server: server,
		log:    logger(env),
	}
	a, err := p.str("address", false)
	if err != nil {
		return nil, err
	}
	if a != "" {
		if k.address, err = netip.ParseAddr(a); err != nil || k.address.Zone() != "" {
			return nil, p.errorf("address", "must be an IPv4 or IPv6 address without prefix length or zone, not %q", a)
		}
		k.address = k.address.Unmap()
	}
	ttl, err := p.integer("ttl", defaultNameTTL, 1, 86400)
	if err != nil {
		return nil, err
	}
	k.ttl = uint32(ttl)
	if k.keyFile, err = p.str("tsig_key_file", false); err != nil {
		return nil, err
	}
	return k, nil
}

// tsigKey is one key of a BIND key file.
type tsigKey struct {
	name, algorithm, secret string
}

var (
	keyNameRE   = regexp.MustCompile(`(?m)^\s*key\s+"?([A-Za-z0-9._-]+)"?\s*\{`)
	keyAlgRE    = regexp.MustCompile(`\balgorithm\s+"?([A-Za-z0-9.-]+)"?\s*;`)
	keySecretRE = regexp.MustCompile(`\bsecret\s+"([A-Za-z0-9+/=]+)"\s*;`)
)

// tsigAlgorithms maps the algorithm names of key files to miekg/dns's.
var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// readKey reads the TSIG key from keyFile, in the format of BIND's
// tsig-keygen and nsupdate -k: key "NAME" { algorithm ALG; secret "B64"; };
// The file is read at every use, so a rotated key takes effect without
// touching the hierarchy.
func (k *nameKit) readKey() (*tsigKey, error) {
	if k.keyFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(k.keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: TSIG key: %w", k.desc, err)
	}
	s := string(b)
	n, a, sec := keyNameRE.FindStringSubmatch(s), keyAlgRE.FindStringSubmatch(s), keySecretRE.FindStringSubmatch(s)
	if n == nil || a == nil || sec == nil {
		return nil, fmt.Errorf(`%s: TSIG key file %s: want key "NAME" { algorithm hmac-sha256; secret "BASE64"; }; (as tsig-keygen writes it)`, k.desc, k.keyFile)
	}
	alg, ok := tsigAlgorithms[strings.ToLower(strings.TrimSuffix(a[1], "."))]
	if !ok {
		return nil, fmt.Errorf("%s: TSIG key file %s: algorithm %q not supported (use hmac-sha256, -sha224, -sha384, -sha512 or -sha1)", k.desc, k.keyFile, a[1])
	}
	return &tsigKey{name: dns.CanonicalName(n[1]), algorithm: alg, secret: sec[1]}, nil
}

// rrType is the record type of the published address.
func rrType(a netip.Addr) uint16 {
	if a.Is4() {
		return dns.TypeA
	}
	return dns.TypeAAAA
}

// addr returns the address to publish: the configured one, or the one
// this node's packets to the server leave from.
func (k *nameKit) addr(ctx context.Context) (netip.Addr, error) {
	if k.address.IsValid() {
		return k.address, nil
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", k.server) // no packet is sent
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: finding this node's address towards %s: %w", k.desc, k.server, err)
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: this node's address towards %s: %w", k.desc, k.server, err)
	}
	return ap.Addr().Unmap(), nil
}

// record returns the record that points the name at a.
func (k *nameKit) record(a netip.Addr) dns.RR {
	h := dns.RR_Header{Name: k.name, Rrtype: rrType(a), Class: dns.ClassINET, Ttl: k.ttl}
	if a.Is4() {
		return &dns.A{Hdr: h, A: net.IP(a.AsSlice())}
	}
	return &dns.AAAA{Hdr: h, AAAA: net.IP(a.AsSlice())}
}

// update sends an update over TCP (it is idempotent, and TCP has no
// truncation and no lost datagram to guess about) and returns the
// server's rcode name, "" when it succeeded. A refusal is not an error:
// err is for a failed exchange or a reply that failed TSIG verification.
func (k *nameKit) update(ctx context.Context, m *dns.Msg) (string, error) {
	key, err := k.readKey()
	if err != nil {
		return "", err
	}
	c := &dns.Client{Net: "tcp", Timeout: dnsExchangeTimeout}
	if key != nil {
		c.TsigSecret = map[string]string{key.name: key.secret}
		m.SetTsig(key.name, key.algorithm, tsigFudge, time.Now().Unix())
	}
	r, _, err := c.ExchangeContext(ctx, m, k.server)
	if r != nil && r.Rcode != dns.RcodeSuccess {
		// A server that could not verify our signature answers NOTAUTH
		// (or REFUSED) with the TSIG error in its unsigned reply, which
		// also fails our verification: the server's reason comes first.
		return rcodeReason(r, key), nil
	}
	if err != nil {
		if errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrTime) {
			return "", fmt.Errorf("the reply of %s failed TSIG verification with key %s: %w", k.server, key.name, err)
		}
		return "", fmt.Errorf("dynamic update to %s: %w", k.server, err)
	}
	return "", nil
}

// rcodeReason names a refusal, with the TSIG error when there is one.
func rcodeReason(r *dns.Msg, key *tsigKey) string {
	s := dns.RcodeToString[r.Rcode]
	if s == "" {
		s = "rcode " + strconv.Itoa(r.Rcode)
	}
	if t := r.IsTsig(); t != nil && t.Error != 0 {
		te := dns.RcodeToString[int(t.Error)]
		if te == "" {
			te = strconv.Itoa(int(t.Error))
		}
		s += " (TSIG error " + te + ": the server does not accept key " + strings.TrimSuffix(key.name, ".") + " with this secret and algorithm)"
	} else if r.Rcode == dns.RcodeNotAuth && key == nil {
		s += " (the server wants a signed update: set tsig_key_file)"
	}
	return s
}

// Start publishes the record, replacing whatever the name had of that
// type, and reads it back.
func (k *nameKit) Start(ctx context.Context) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	a, err := k.addr(ctx)
	if err != nil {
		return err
	}
	rr := k.record(a)
	m := new(dns.Msg)
	m.SetUpdate(k.zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: k.name, Rrtype: rrType(a), Class: dns.ClassINET}}})
	m.Insert([]dns.RR{rr})
	began := time.Now()
	refused, err := k.update(ctx, m)
	if err != nil {
		return fmt.Errorf("%s: pointing it at %s: %w", k.desc, a, err)
	}
	if refused != "" {
		return fmt.Errorf("%s: server %s refused the update pointing it at %s in zone %s: %s", k.desc, k.server, a, k.zoneN, refused)
	}
	if err := k.verify(ctx, a, true); err != nil {
		return fmt.Errorf("%s: updated, but reading it back: %w", k.desc, err)
	}
	k.log.Info("name published", "name", k.name, "address", a.String(), "ttl", k.ttl, "server", k.server, "ms", time.Since(began).Milliseconds())
	return nil
}

// Stop deletes the record if it still points at this node's address,
// as far as the server lets it: see the end of the function.
func (k *nameKit) Stop(ctx context.Context) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	a, err := k.addr(ctx)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetUpdate(k.zone)
	// Two copies: Used and Remove each rewrite the header of the record
	// they are given.
	m.Used([]dns.RR{k.record(a)}) // prerequisite: the record still exists
	m.Remove([]dns.RR{k.record(a)})
	refused, err := k.update(ctx, m)
	switch {
	case err != nil:
		k.log.Warn("name not removed: the update failed; the next holder's bring-up replaces the record", "name", k.name, "address", a.String(), "server", k.server, "error", err.Error())
	case refused == dns.RcodeToString[dns.RcodeNXRrset]:
		k.log.Info("name not removed: it no longer points here", "name", k.name, "address", a.String())
	case refused != "":
		k.log.Warn("name not removed: the server refused; the next holder's bring-up replaces the record", "name", k.name, "address", a.String(), "server", k.server, "refused", refused)
	default:
		k.log.Info("name removed", "name", k.name, "address", a.String(), "server", k.server)
	}
	// Never an error: the node stops holding the name whatever the server
	// says, the next holder's update replaces the record atomically, and a
	// failed take-down would turn a DNS problem (a server down, a key
	// rotated) into an unclean take-down of the whole hierarchy, or an
	// unclean rollback of a bring-up the server refused.
	return nil
}

// errNoAnswer marks a query the server did not answer at all (timeout,
// connection refused, unreachable network).
var errNoAnswer = errors.New("no answer")

// Check resolves the name at the server (quick), or also checks that the
// answer is authoritative, holds only this node's address and has the
// configured TTL (deep).
//
// A server that does not answer at all is logged, not reported: the
// record it holds cannot have changed while nobody reaches it, and a
// failed check would restart the name and then fail the whole hierarchy
// over to nodes that cannot reach the server either: a DNS outage must
// not take the mail service down with it. A wrong answer (another
// address, no record, a changed TTL) is reported.
func (k *nameKit) Check(ctx context.Context, deep bool) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	a, err := k.addr(ctx)
	if err != nil {
		return err
	}
	err = k.verify(ctx, a, deep)
	if errors.Is(err, errNoAnswer) {
		k.log.Warn("name check: the DNS server does not answer; the record is assumed unchanged", "name", k.name, "server", k.server, "error", err.Error())
		return nil
	}
	return err
}

// Fence does nothing: see nameKit.
func (k *nameKit) Fence() error { return nil }

// errNameElsewhere wraps ErrNotRunning: the name resolves, but not here.
var errNameElsewhere = fmt.Errorf("points elsewhere: %w", ErrNotRunning)

// verify queries the server for the name's records of a's type.
func (k *nameKit) verify(ctx context.Context, a netip.Addr, deep bool) error {
	q := new(dns.Msg)
	q.SetQuestion(k.name, rrType(a))
	q.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: dnsExchangeTimeout}
	r, _, err := c.ExchangeContext(ctx, q, k.server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, k.server)
	}
	if err != nil {
		return fmt.Errorf("%s: resolving at %s: %w: %w", k.desc, k.server, errNoAnswer, err)
	}
	typ := dns.TypeToString[rrType(a)]
	if r.Rcode == dns.RcodeNameError {
		return fmt.Errorf("%s: %s at %s: NXDOMAIN: %w", k.desc, typ, k.server, ErrNotRunning)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("%s: %s at %s: %s", k.desc, typ, k.server, dns.RcodeToString[r.Rcode])
	}
	var got []string
	var ttl uint32
	found := false
	for _, rr := range r.Answer {
		if !strings.EqualFold(rr.Header().Name, k.name) || rr.Header().Rrtype != rrType(a) {
			continue
		}
		var ip net.IP
		switch x := rr.(type) {
		case *dns.A:
			ip = x.A
		case *dns.AAAA:
			ip = x.AAAA
		}
		got = append(got, ip.String())
		if ad, ok := netip.AddrFromSlice(ip); ok && ad.Unmap() == a {
			found, ttl = true, rr.Header().Ttl
		}
	}
	slices.Sort(got)
	if !found {
		if len(got) == 0 {
			return fmt.Errorf("%s: no %s record at %s: %w", k.desc, typ, k.server, ErrNotRunning)
		}
		return fmt.Errorf("%s: %s at %s is %s, not this node's %s: %w", k.desc, typ, k.server, strings.Join(got, ", "), a, errNameElsewhere)
	}
	if !deep {
		return nil
	}
	if !r.Authoritative {
		return fmt.Errorf("%s: the answer of %s is not authoritative: is it the primary of zone %s?", k.desc, k.server, k.zoneN)
	}
	if len(got) > 1 {
		return fmt.Errorf("%s: %s at %s holds %s, not only this node's %s", k.desc, typ, k.server, strings.Join(got, ", "), a)
	}
	if ttl != k.ttl {
		return fmt.Errorf("%s: TTL at %s is %d s, want %d s", k.desc, k.server, ttl, k.ttl)
	}
	return nil
}
