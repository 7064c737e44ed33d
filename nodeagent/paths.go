package nodeagent

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/client"
)

// DefaultPathPort is the UDP port of path heartbeats on every node.
const DefaultPathPort = 7406

// lossWindow is how many recent expected packets the loss covers.
const lossWindow = 20

// linkState is what one node knows of a peer over one path: the packets
// received from it (for liveness and loss), its echo of ours (for the
// round-trip time) and what to echo back. It is pure state, driven by
// accept and read with up and loss, so tests need no sockets.
type linkState struct {
	lastRecv time.Time // zero: nothing received yet
	maxSeq   uint64    // newest seq accepted
	window   uint64    // bit i set: seq maxSeq-i was received
	span     int       // seq positions the window covers (≤ 64)
	srtt     time.Duration
	hasRTT   bool
	// The newest packet from the peer, echoed in ours.
	peerSeq    uint64
	peerSentNS int64
	peerRecvNS int64
	// echoedNS is the send time (this node's clock) of the newest packet
	// of ours the peer had received, from its genuine echoes: the peer
	// sees this node at least as of then (0: never echoed).
	echoedNS int64
	// gapNS is when (this node's clock) the echoes last jumped by nearly
	// a dead-after time: the peer may have found this node silent then,
	// and reported it (0: never).
	gapNS int64
	// up is the state last logged.
	up bool
}

// accept takes an authenticated packet addressed to this link. It refuses
// a seq not above the newest one accepted (a replay, or reordering, which
// a heartbeat can ignore). nowNS is the local monotonic clock in the unit
// of the packets' sent fields; ourLo and ourHi bound the seqs this node
// sent on the reverse direction, so that only a genuine echo yields an RTT.
func (s *linkState) accept(p pathPacket, now time.Time, nowNS int64, ourLo, ourHi uint64) bool {
	if s.span > 0 && p.Seq <= s.maxSeq {
		return false
	}
	if s.span == 0 {
		s.window, s.span = 1, 1
	} else {
		d := p.Seq - s.maxSeq
		if d >= 64 {
			s.window, s.span = 1, 1
		} else {
			s.window = s.window<<d | 1
			s.span = min(64, s.span+int(d))
		}
	}
	s.maxSeq = p.Seq
	s.lastRecv = now
	s.peerSeq, s.peerSentNS, s.peerRecvNS = p.Seq, p.SentNS, nowNS
	if p.EchoSeq != 0 && p.EchoSeq >= ourLo && p.EchoSeq <= ourHi && p.EchoHoldNS >= 0 {
		if p.EchoSentNS > s.echoedNS && p.EchoSentNS <= nowNS {
			s.echoedNS = p.EchoSentNS
		}
		rtt := time.Duration(nowNS - p.EchoSentNS - p.EchoHoldNS)
		if rtt >= 0 && rtt < time.Minute {
			if s.hasRTT {
				s.srtt += (rtt - s.srtt) / 8 // TCP's smoothing (RFC 6298)
			} else {
				s.srtt, s.hasRTT = rtt, true
			}
		}
	}
	return true
}

// isUp reports whether a packet arrived within deadAfter.
func (s *linkState) isUp(now time.Time, deadAfter time.Duration) bool {
	return !s.lastRecv.IsZero() && now.Sub(s.lastRecv) < deadAfter
}

// loss returns the fraction of the last lossWindow expected packets that
// did not arrive: gaps in the seqs received, plus the packets that should
// have arrived since the last one.
func (s *linkState) loss(now time.Time, interval time.Duration) float64 {
	if s.lastRecv.IsZero() || interval <= 0 {
		return 1
	}
	overdue := max(0, int(now.Sub(s.lastRecv)/interval)-1)
	if overdue >= lossWindow {
		return 1
	}
	expected := min(lossWindow, s.span+overdue)
	k := expected - overdue // window positions inside the expected range
	got := bits.OnesCount64(s.window & (1<<uint(k) - 1))
	return 1 - float64(got)/float64(expected)
}

// echo returns what to echo to the peer in a packet sent at nowNS.
func (s *linkState) echo(nowNS int64) (seq uint64, sentNS, holdNS int64) {
	if s.peerSeq == 0 {
		return 0, 0, 0
	}
	return s.peerSeq, s.peerSentNS, max(0, nowNS-s.peerRecvNS)
}

// pathLink is one directed path from this node, with the state of its
// reverse direction (what the peer sends on it).
type pathLink struct {
	id, reverseID, peer string
	idB, peerB          [16]byte
	local, remote       netip.Addr
	seqLo, seq          uint64 // first and last seq sent
	st                  linkState
}

// pathsConfig is what the path manager needs from the agent's
// configuration.
type pathsConfig struct {
	ClusterID, NodeID string
	Key               []byte
	Interval          time.Duration
	DeadAfter         int
	Paths             []client.Path
	Peers             []string
}

// pathManager sends and receives the UDP heartbeats of every path of this
// node and answers "which peers can I see".
type pathManager struct {
	log   *slog.Logger
	met   *metrics
	port  int
	epoch time.Time // origin of the monotonic nanoseconds in packets
	wake  chan struct{}
	// beat, if set, is called at every send round (liveness).
	beat func()

	// mu guards the fields below.
	mu        sync.Mutex
	cluster   [16]byte
	self      [16]byte
	key       []byte
	interval  time.Duration
	deadAfter int
	links     map[string]*pathLink   // by this node's path id
	incoming  map[[16]byte]*pathLink // by the peer's path id (reverse_id)
	peers     map[string]bool
	conns     map[netip.Addr]*net.UDPConn
	bindErrs  map[netip.Addr]string
	seqBase   uint64
}

func newPathManager(log *slog.Logger, met *metrics, port int) *pathManager {
	return &pathManager{log: log, met: met, port: port, epoch: time.Now(), wake: make(chan struct{}, 1),
		interval: 200 * time.Millisecond, deadAfter: 3,
		links: map[string]*pathLink{}, incoming: map[[16]byte]*pathLink{}, peers: map[string]bool{},
		conns: map[netip.Addr]*net.UDPConn{}, bindErrs: map[netip.Addr]string{},
		seqBase: uint64(time.Now().UnixNano())}
}

func (m *pathManager) nowNS() int64 { return int64(time.Since(m.epoch)) }

func uuidBytes(s string) ([16]byte, bool) {
	u, err := uuid.Parse(s)
	return u, err == nil
}

// configure applies a configuration; links that did not change keep
// their state.
func (m *pathManager) configure(c pathsConfig) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cluster, _ = uuidBytes(c.ClusterID)
	m.self, _ = uuidBytes(c.NodeID)
	m.key = append([]byte(nil), c.Key...)
	if c.Interval > 0 {
		m.interval = c.Interval
	}
	if c.DeadAfter > 0 {
		m.deadAfter = c.DeadAfter
	}
	m.peers = map[string]bool{}
	for _, p := range c.Peers {
		if p != c.NodeID {
			m.peers[p] = true
		}
	}
	links := map[string]*pathLink{}
	incoming := map[[16]byte]*pathLink{}
	for _, p := range c.Paths {
		if p.LocalNodeId.String() != c.NodeID {
			continue
		}
		local, err1 := netip.ParseAddr(p.LocalAddress)
		remote, err2 := netip.ParseAddr(p.RemoteAddress)
		if err1 != nil || err2 != nil {
			m.log.Warn("path with an unusable address ignored", keyPath, p.Id.String(),
				"local_address", p.LocalAddress, "remote_address", p.RemoteAddress)
			continue
		}
		l := &pathLink{id: p.Id.String(), reverseID: p.ReverseId.String(), peer: p.RemoteNodeId.String(),
			idB: p.Id, peerB: p.RemoteNodeId, local: local.Unmap(), remote: remote.Unmap()}
		if old, ok := m.links[l.id]; ok && old.local == l.local && old.remote == l.remote && old.peer == l.peer && old.reverseID == l.reverseID {
			l = old
		} else {
			m.seqBase++
			l.seq = m.seqBase
			l.seqLo = l.seq + 1
		}
		links[l.id] = l
		incoming[p.ReverseId] = l
		m.peers[l.peer] = true
	}
	m.links, m.incoming = links, incoming
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// run sends heartbeats on every path each interval and receives the
// peers' until ctx ends.
func (m *pathManager) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() {
		m.mu.Lock()
		for a, c := range m.conns {
			_ = c.Close()
			delete(m.conns, a)
		}
		m.mu.Unlock()
		wg.Wait()
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-m.wake:
		}
		if m.beat != nil {
			m.beat()
		}
		m.bind(&wg)
		m.sendAll()
		m.transitions(time.Now())
		m.mu.Lock()
		iv := m.interval
		m.mu.Unlock()
		timer.Reset(iv)
	}
}

// bind opens a socket on every local address of a path and closes the
// sockets no path uses any more. An address that cannot be bound (not
// configured yet) is retried at the next interval.
func (m *pathManager) bind(wg *sync.WaitGroup) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[netip.Addr]bool{}
	for _, l := range m.links {
		want[l.local] = true
	}
	for a, c := range m.conns {
		if !want[a] {
			_ = c.Close()
			delete(m.conns, a)
		}
	}
	for a := range want {
		if _, ok := m.conns[a]; ok {
			continue
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, uint16(m.port))))
		if err != nil {
			if m.bindErrs[a] != err.Error() {
				m.bindErrs[a] = err.Error()
				m.log.Warn("cannot listen for path heartbeats; retrying", keyEvent, eventPathBindFailed,
					"local_address", a.String(), "port", m.port, keyErr, err)
			}
			continue
		}
		delete(m.bindErrs, a)
		m.conns[a] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.read(c)
		}()
	}
}

// read receives packets from c until it is closed.
func (m *pathManager) read(c *net.UDPConn) {
	buf := make([]byte, pathMaxReadLen)
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m.handle(buf[:n], time.Now())
	}
}

// handle authenticates and applies one received packet; it returns the
// drop reason, or "" when the packet was accepted.
func (m *pathManager) handle(b []byte, now time.Time) string {
	m.mu.Lock()
	reason := m.handleLocked(b, now)
	m.mu.Unlock()
	if reason == "" {
		m.met.pathPackets.WithLabelValues("accepted").Inc()
	} else {
		m.met.pathPackets.WithLabelValues(reason).Inc()
	}
	return reason
}

func (m *pathManager) handleLocked(b []byte, now time.Time) string {
	p, err := unmarshalPathPacket(b, m.key)
	if err != nil {
		return err.Error()
	}
	if p.Cluster != m.cluster {
		return "wrong_cluster"
	}
	if p.Receiver != m.self {
		return "wrong_receiver"
	}
	l := m.incoming[p.Path]
	if l == nil {
		return "unknown_path"
	}
	if p.Sender != l.peerB {
		return "wrong_sender"
	}
	nowNS := m.nowNS()
	prevEcho := l.st.echoedNS
	if !l.st.accept(p, now, nowNS, l.seqLo, l.seq) {
		return "replay"
	}
	if prevEcho != 0 && l.st.echoedNS-prevEcho >= int64(m.deadAfterLocked()-m.interval/2) {
		l.st.gapNS = nowNS
	}
	if !l.st.up {
		l.st.up = true
		m.log.Info("path up", keyEvent, eventPathUp, keyPath, l.id, keyPeer, l.peer, "remote_address", l.remote.String())
	}
	return ""
}

// transitions logs paths that went down.
func (m *pathManager) transitions(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dead := m.deadAfterLocked()
	for _, l := range m.links {
		if l.st.up && !l.st.isUp(now, dead) {
			l.st.up = false
			m.log.Warn("path down", keyEvent, eventPathDown, keyPath, l.id, keyPeer, l.peer,
				"remote_address", l.remote.String(), "silent_ms", now.Sub(l.st.lastRecv).Milliseconds())
		}
	}
}

func (m *pathManager) deadAfterLocked() time.Duration {
	return m.interval * time.Duration(m.deadAfter)
}

// sendAll sends one heartbeat on every path whose local address is bound.
func (m *pathManager) sendAll() {
	type out struct {
		c  *net.UDPConn
		to netip.AddrPort
		b  []byte
	}
	var outs []out
	m.mu.Lock()
	if len(m.key) > 0 {
		now := m.nowNS()
		for _, l := range m.links {
			c := m.conns[l.local]
			if c == nil {
				continue
			}
			l.seq++
			es, esent, ehold := l.st.echo(now)
			p := pathPacket{Cluster: m.cluster, Sender: m.self, Receiver: l.peerB, Path: l.idB,
				Seq: l.seq, SentNS: now, EchoSeq: es, EchoSentNS: esent, EchoHoldNS: ehold}
			outs = append(outs, out{c: c, to: netip.AddrPortFrom(l.remote, uint16(m.port)), b: p.marshal(m.key)})
		}
	}
	m.mu.Unlock()
	for _, o := range outs {
		if _, err := o.c.WriteToUDPAddrPort(o.b, o.to); err != nil {
			m.met.pathPackets.WithLabelValues("send_error").Inc()
			continue
		}
		m.met.pathPackets.WithLabelValues("sent").Inc()
	}
}

// pathSnap is one path's state for reports and metrics.
type pathSnap struct {
	PathID, Peer string
	Up           bool
	RTT          time.Duration
	HasRTT       bool
	Loss         float64
}

// snapshot returns every path's state, sorted by path id.
func (m *pathManager) snapshot() []pathSnap {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	dead := m.deadAfterLocked()
	out := make([]pathSnap, 0, len(m.links))
	for _, l := range m.links {
		up := l.st.isUp(now, dead)
		loss := l.st.loss(now, m.interval)
		if !up {
			loss = 1
		}
		out = append(out, pathSnap{PathID: l.id, Peer: l.peer, Up: up, RTT: l.st.srtt, HasRTT: l.st.hasRTT, Loss: loss})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PathID < out[j].PathID })
	return out
}

// reports returns the PathReports of a heartbeat.
func (m *pathManager) reports() []client.PathReport {
	snaps := m.snapshot()
	out := make([]client.PathReport, 0, len(snaps))
	for _, s := range snaps {
		pid, ok1 := uuidBytes(s.PathID)
		peer, ok2 := uuidBytes(s.Peer)
		if !ok1 || !ok2 {
			continue
		}
		r := client.PathReport{PathId: pid, PeerNodeId: peer, State: client.PathReportStateDown}
		if s.Up {
			r.State = client.PathReportStateUp
		}
		loss := float32(s.Loss)
		r.Loss = &loss
		if s.HasRTT && s.Up {
			rtt := float32(float64(s.RTT) / float64(time.Millisecond))
			r.RttMs = &rtt
		}
		out = append(out, r)
	}
	return out
}

// seenBy returns until when a majority of the cluster (this node
// included) is known to keep seeing this node: the peers' echoes say which
// of this node's packets each received; a peer that received a packet
// sent at T does not find the path dead before T + dead-after (it counts
// from its receipt, later than T), and then still has to report it and
// the control plane to judge, so the majority-th newest echo plus the
// dead-after time, less a quarter interval of margin, is a time before
// which no majority can have lost this node. (One whole interval less
// would leave too little: the newest echo lags the present by up to an
// interval already, and the agent must renew the vouch before it ends.) Only peers whose own packets are fresh count (a
// mutual view, not merely "I hear them"). ok is false without such a
// majority. The view must also have been continuous since since (the send
// time of the last heartbeat the control plane acknowledged): a peer whose
// echoes show a gap after it may have reported this node dead meanwhile,
// and does not count. The time is on the path manager's clock, returned as
// how far from now it lies.
func (m *pathManager) seenBy(now, since time.Time) (until time.Duration, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dead := m.deadAfterLocked()
	nowNS := m.nowNS()
	sinceNS := int64(since.Sub(m.epoch))
	best := map[string]int64{}
	for _, l := range m.links {
		if l.st.gapNS != 0 && l.st.gapNS >= sinceNS {
			// The peer may have lost this node since the control plane
			// last renewed its lease, and reported it: the control plane
			// may have declared it down then, whatever the peer sees now.
			continue
		}
		if l.st.isUp(now, dead) && l.st.echoedNS > best[l.peer] {
			best[l.peer] = l.st.echoedNS
		}
	}
	total := 1 + len(m.peers)
	need := total / 2 // peers needed besides this node for a strict majority
	if need == 0 || len(best) < need {
		return 0, false
	}
	times := make([]int64, 0, len(best))
	for _, t := range best {
		times = append(times, t)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] > times[j] })
	t := times[need-1]
	return time.Duration(t-nowNS) + m.interval*time.Duration(m.deadAfter) - m.interval/4, true
}

// visible returns how many nodes of the cluster this node sees: itself
// plus every peer with at least one path up; and the cluster's size.
func (m *pathManager) visible(now time.Time) (visible, total int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dead := m.deadAfterLocked()
	seen := map[string]bool{}
	for _, l := range m.links {
		if l.st.isUp(now, dead) {
			seen[l.peer] = true
		}
	}
	return 1 + len(seen), 1 + len(m.peers)
}
