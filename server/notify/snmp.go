package notify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gosnmp/gosnmp"

	"github.com/backstop-ha/backstop"
)

// OIDs of BACKSTOP-MIB (openapi/BACKSTOP-MIB.txt). The enterprise number
// 32473 is RFC 5612's documentation number: a placeholder until Backstop
// has a private enterprise number of its own.
const (
	oidBackstop      = ".1.3.6.1.4.1.32473"
	oidNotifications = oidBackstop + ".0"
	oidEventObjects  = oidBackstop + ".1.1"

	oidSysUpTime   = ".1.3.6.1.2.1.1.3.0"
	oidSnmpTrapOID = ".1.3.6.1.6.3.1.1.4.1.0"
)

// Varbind columns under backstopEventObjects (scalars: instance .0).
const (
	vbSeq         = 1
	vbID          = 2
	vbType        = 3
	vbSeverity    = 4
	vbCluster     = 5
	vbNode        = 6
	vbHierarchy   = 7
	vbMessage     = 8
	vbTime        = 9
	vbDetails     = 10
	maxSnmpString = 255
)

// TrapOID returns the notification OID an event type is sent as.
func TrapOID(typ string) string {
	n := backstop.GenericTrap
	if e, ok := backstop.LookupEventType(typ); ok {
		n = e.Trap
	}
	return oidNotifications + "." + strconv.Itoa(n)
}

func vb(col int) string { return oidEventObjects + "." + strconv.Itoa(col) + ".0" }

// snmpString cuts s to an SnmpAdminString's 255 octets, on a character
// boundary.
func snmpString(s string) string {
	if len(s) <= maxSnmpString {
		return s
	}
	cut := maxSnmpString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// dateAndTime encodes t as SNMPv2-TC DateAndTime (11 octets, UTC).
func dateAndTime(t time.Time) []byte {
	t = t.UTC()
	return []byte{byte(t.Year() >> 8), byte(t.Year()), byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second()),
		byte(t.Nanosecond() / 100_000_000), '+', 0, 0}
}

// trapVarbinds are an event's varbinds after sysUpTime.0 and
// snmpTrapOID.0, in the order of the notifications' OBJECTS clause.
func trapVarbinds(payload []byte) ([]gosnmp.SnmpPDU, string, error) {
	var e struct {
		Seq       int64             `json:"seq"`
		ID        string            `json:"id"`
		ClusterID string            `json:"cluster_id"`
		Type      string            `json:"type"`
		Severity  string            `json:"severity"`
		Message   string            `json:"message"`
		Subject   map[string]string `json:"subject"`
		Details   json.RawMessage   `json:"details"`
		At        time.Time         `json:"at"`
	}
	if err := json.Unmarshal(payload, &e); err != nil {
		return nil, "", fmt.Errorf("event payload: %w", err)
	}
	details, _ := json.Marshal(map[string]any{"subject": e.Subject, "details": e.Details})
	str := func(col int, s string) gosnmp.SnmpPDU {
		return gosnmp.SnmpPDU{Name: vb(col), Type: gosnmp.OctetString, Value: []byte(snmpString(s))}
	}
	return []gosnmp.SnmpPDU{
		{Name: vb(vbSeq), Type: gosnmp.Counter64, Value: uint64(max(e.Seq, 0))},
		str(vbID, e.ID),
		str(vbType, e.Type),
		{Name: vb(vbSeverity), Type: gosnmp.Integer, Value: backstop.SeverityRank(e.Severity) + 1},
		str(vbCluster, e.ClusterID),
		str(vbNode, e.Subject["node_id"]),
		str(vbHierarchy, e.Subject["hierarchy_id"]),
		str(vbMessage, e.Message),
		{Name: vb(vbTime), Type: gosnmp.OctetString, Value: dateAndTime(e.At)},
		str(vbDetails, string(details)),
	}, TrapOID(e.Type), nil
}

// trapSink sends traps, with one *gosnmp.GoSNMP per target (never the
// package's global): each keeps its socket and, for v3, its localized
// keys.
//
// A cached sender is rebuilt, and its socket closed, when its target
// changed (send compares the target's version, secret and engine). The
// senders of targets that were deleted, or that stopped sending (a
// target disabled or narrowed by a change, or whose lease another replica
// holds), are closed by sweep, which the Service runs every
// trapSweepInterval: without it each of them would keep its UDP socket
// for the life of the process.
type trapSink struct {
	// mu guards the fields below.
	mu      sync.Mutex
	senders map[string]*trapSender
}

type trapSender struct {
	// lastUsed is when a send last started (Unix nanoseconds), read by
	// sweep without waiting for a send in progress.
	lastUsed atomic.Int64

	// mu serialises sends on g (its security parameters are updated
	// before each v3 trap) and guards the fields below.
	mu  sync.Mutex
	key string // what g was built from; a change rebuilds it
	g   *gosnmp.GoSNMP
	// dropped is set when the sink dropped this sender: a send that
	// found it just before must not open a socket nobody would close.
	dropped bool
}

func newTrapSink() *trapSink { return &trapSink{senders: map[string]*trapSender{}} }

// sender returns t's sender, locked, marked used at now.
func (s *trapSink) sender(t backstop.Target, now time.Time) *trapSender {
	for {
		s.mu.Lock()
		x, ok := s.senders[t.ID]
		if !ok {
			x = &trapSender{}
			s.senders[t.ID] = x
		}
		x.lastUsed.Store(now.UnixNano())
		s.mu.Unlock()
		x.mu.Lock()
		if !x.dropped {
			return x
		}
		x.mu.Unlock() // dropped meanwhile: take (or make) the current one
	}
}

// closeLocked closes x's socket, if any. x.mu must be held.
func (x *trapSender) closeLocked() {
	if x.g != nil && x.g.Conn != nil {
		_ = x.g.Conn.Close()
	}
	x.g = nil
}

// drop removes id's sender, if it is still x, and closes its socket once
// a send in progress on it ends.
func (s *trapSink) drop(id string, x *trapSender) {
	s.mu.Lock()
	if s.senders[id] == x {
		delete(s.senders, id)
	}
	s.mu.Unlock()
	x.mu.Lock()
	x.dropped = true
	x.closeLocked()
	x.mu.Unlock()
}

// sweep drops the senders of targets not in live and of those that have
// not sent since idleSince, closing their sockets. It returns how many it
// dropped. A nil live drops every sender that idleSince does not keep.
func (s *trapSink) sweep(live map[string]bool, idleSince time.Time) int {
	type entry struct {
		id string
		x  *trapSender
	}
	var stale []entry
	s.mu.Lock()
	for id, x := range s.senders {
		if !live[id] || x.lastUsed.Load() < idleSince.UnixNano() {
			stale = append(stale, entry{id, x})
		}
	}
	s.mu.Unlock()
	for _, e := range stale {
		s.drop(e.id, e.x)
	}
	return len(stale)
}

// open is how many senders the sink caches (each holds at most one
// socket).
func (s *trapSink) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.senders)
}

// send sends one trap: trapOID with vars, as the engine for v3.
func (s *trapSink) send(t backstop.Target, sec backstop.SNMPSecrets, engine backstop.SNMPEngine, trapOID string, vars []gosnmp.SnmpPDU, timeout time.Duration) backstop.AttemptResult {
	start := time.Now()
	x := s.sender(t, start)
	defer x.mu.Unlock()
	key := fmt.Sprintf("%d|%x|%x", t.Version, t.Secret, engine.ID)
	if x.g == nil || x.key != key {
		x.closeLocked()
		g, err := newGoSNMP(t.SNMP, sec, engine, timeout)
		if err != nil {
			return backstop.AttemptResult{Err: err, Latency: time.Since(start)}
		}
		x.g, x.key = g, key
	}
	if usm, ok := x.g.SecurityParameters.(*gosnmp.UsmSecurityParameters); ok {
		// The engine's boots and time as of now: receivers drop traps
		// whose boots/time go backwards.
		usm.AuthoritativeEngineBoots = uint32(engine.Boots)
		usm.AuthoritativeEngineTime = uint32(engine.Time)
	}
	pdus := append([]gosnmp.SnmpPDU{
		{Name: oidSysUpTime, Type: gosnmp.TimeTicks, Value: uint32(int64(engine.Time) * 100 % (1 << 32))},
		{Name: oidSnmpTrapOID, Type: gosnmp.ObjectIdentifier, Value: trapOID},
	}, vars...)
	_, err := x.g.SendTrap(gosnmp.SnmpTrap{Variables: pdus})
	r := backstop.AttemptResult{Latency: time.Since(start)}
	if err != nil {
		// A socket error (e.g. ICMP unreachable seen on the connected
		// UDP socket) is worth another try, on a new socket.
		x.closeLocked()
		r.Err, r.Retryable = fmt.Errorf("send trap to %s:%d: %w", t.SNMP.Host, t.SNMP.Port, err), true
	}
	return r
}

func newGoSNMP(c *backstop.SNMPConfig, sec backstop.SNMPSecrets, engine backstop.SNMPEngine, timeout time.Duration) (*gosnmp.GoSNMP, error) {
	if c == nil {
		return nil, fmt.Errorf("not an SNMP target")
	}
	g := &gosnmp.GoSNMP{
		Target:    c.Host,
		Port:      uint16(c.Port),
		Transport: "udp",
		Timeout:   timeout,
		Retries:   0,
		MaxOids:   gosnmp.MaxOids,
	}
	switch c.Version {
	case backstop.SNMPv2c:
		g.Version, g.Community = gosnmp.Version2c, sec.Community
	case backstop.SNMPv3:
		auth := gosnmp.SHA
		if c.AuthProtocol == "SHA-256" {
			auth = gosnmp.SHA256
		}
		g.Version, g.SecurityModel, g.MsgFlags = gosnmp.Version3, gosnmp.UserSecurityModel, gosnmp.AuthPriv
		g.SecurityParameters = &gosnmp.UsmSecurityParameters{
			UserName:                 c.User,
			AuthenticationProtocol:   auth,
			AuthenticationPassphrase: sec.AuthPassphrase,
			PrivacyProtocol:          gosnmp.AES,
			PrivacyPassphrase:        sec.PrivPassphrase,
			AuthoritativeEngineID:    string(engine.ID),
			AuthoritativeEngineBoots: uint32(engine.Boots),
			AuthoritativeEngineTime:  uint32(engine.Time),
		}
	default:
		return nil, fmt.Errorf("unknown SNMP version %q", c.Version)
	}
	if err := g.Connect(); err != nil {
		return nil, fmt.Errorf("connect to %s:%d: %w", c.Host, c.Port, err)
	}
	return g, nil
}
