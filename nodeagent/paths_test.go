package nodeagent

import (
	"bytes"
	"context"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/openapi/client"
)

var pathKey = []byte("0123456789abcdef0123456789abcdef")

func samplePacket() pathPacket {
	return pathPacket{
		Cluster: uuid.MustParse(testCluster), Sender: uuid.MustParse(testPeer), Receiver: uuid.MustParse(testNode),
		Path: uuid.MustParse("0195f7a4-2222-7000-8000-000000000002"), Seq: 1 << 60, SentNS: 12345,
		EchoSeq: 77, EchoSentNS: 999, EchoHoldNS: 42,
	}
}

func TestPathPacketRoundTripAndTampering(t *testing.T) {
	p := samplePacket()
	b := p.marshal(pathKey)
	if len(b) != pathPacketLen {
		t.Fatalf("length %d", len(b))
	}
	got, err := unmarshalPathPacket(b, pathKey)
	if err != nil || got != p {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if _, err := unmarshalPathPacket(c, pathKey); err != errPathMAC {
			t.Fatalf("flipping byte %d: %v", i, err)
		}
	}
	if _, err := unmarshalPathPacket(b, []byte("another key")); err != errPathMAC {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := unmarshalPathPacket(b, nil); err != errPathMAC {
		t.Fatalf("no key: %v", err)
	}
	if _, err := unmarshalPathPacket(b[:len(b)-1], pathKey); err != errPathLength {
		t.Fatalf("short: %v", err)
	}
	if _, err := unmarshalPathPacket(append(b, 0), pathKey); err != errPathLength {
		t.Fatalf("long: %v", err)
	}
}

// FuzzPathPacket feeds the decoder arbitrary bytes: it must never panic,
// and whatever it accepts must be exactly what an encoder with the key
// produces (so nothing unauthenticated is ever believed).
func FuzzPathPacket(f *testing.F) {
	p := samplePacket()
	good := p.marshal(pathKey)
	f.Add(good)
	tampered := bytes.Clone(good)
	tampered[80] ^= 0xff
	f.Add(tampered)
	f.Add(good[:50])
	f.Add([]byte{})
	f.Add((&pathPacket{}).marshal([]byte("other")))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := unmarshalPathPacket(b, pathKey)
		if err != nil {
			return
		}
		if !bytes.Equal(q.marshal(pathKey), b) {
			t.Fatalf("accepted a packet that does not re-encode to itself: %x", b)
		}
	})
}

func TestLinkStateLossReplayAndRTT(t *testing.T) {
	var s linkState
	t0 := time.Unix(100, 0)
	iv := 100 * time.Millisecond
	if s.loss(t0, iv) != 1 || s.isUp(t0, 3*iv) {
		t.Fatal("a silent link is up or lossless")
	}
	base := uint64(1 << 40)
	// 20 packets, every 5th missing.
	var now time.Time
	for i := range uint64(20) {
		now = t0.Add(time.Duration(i) * iv)
		if i%5 == 4 {
			continue
		}
		if !s.accept(pathPacket{Seq: base + i}, now, 0, 0, 0) {
			t.Fatalf("seq %d refused", i)
		}
	}
	// i=19 is not late yet: one interval after i=18 it is just due.
	if got := s.loss(now, iv); math.Abs(got-3.0/19) > 1e-9 {
		t.Fatalf("loss %v, want %v", got, 3.0/19)
	}
	if got := s.loss(now.Add(iv), iv); math.Abs(got-4.0/20) > 1e-9 {
		t.Fatalf("loss one interval later %v, want %v", got, 4.0/20)
	}
	if s.accept(pathPacket{Seq: base + 18}, now, 0, 0, 0) || s.accept(pathPacket{Seq: base + 3}, now, 0, 0, 0) {
		t.Fatal("a replayed or old seq was accepted")
	}
	if !s.isUp(now, 3*iv) || s.isUp(now.Add(3*iv), 3*iv) {
		t.Fatal("up/down by time is wrong")
	}
	// Silence counts as loss.
	if got := s.loss(now.Add(10*iv), iv); got < 0.5 {
		t.Fatalf("loss after a 1 s silence %v", got)
	}
	if got := s.loss(now.Add(30*iv), iv); got != 1 {
		t.Fatalf("loss after a long silence %v", got)
	}
	// A restarted peer continues far above: accepted, window restarts.
	if !s.accept(pathPacket{Seq: base + 1_000_000}, now, 0, 0, 0) || s.span != 1 {
		t.Fatal("restarted peer not accepted")
	}

	// RTT: we sent seq 500 at our time 1 ms; the peer held it 0.2 ms;
	// its echo arrives at our time 2 ms: RTT 0.8 ms.
	var r linkState
	r.accept(pathPacket{Seq: 9, EchoSeq: 500, EchoSentNS: 1_000_000, EchoHoldNS: 200_000}, t0, 2_000_000, 400, 600)
	if !r.hasRTT || r.srtt != 800*time.Microsecond {
		t.Fatalf("rtt %v %v", r.srtt, r.hasRTT)
	}
	// An echo of a seq we never sent (another process of ours) is ignored.
	r.accept(pathPacket{Seq: 10, EchoSeq: 9000, EchoSentNS: 0, EchoHoldNS: 0}, t0, 9_000_000_000, 400, 600)
	if r.srtt != 800*time.Microsecond {
		t.Fatalf("rtt moved on a foreign echo: %v", r.srtt)
	}
	if seq, sent, hold := r.echo(9_000_500_000); seq != 10 || sent != 0 || hold != 500_000 {
		t.Fatalf("echo %d %d %d", seq, sent, hold)
	}
	if _, _, hold := r.echo(1); hold != 0 {
		t.Fatalf("negative hold not clamped: %d", hold)
	}
}

// twoPaths returns the directed paths of a link between testNode at a and
// testPeer at b.
func twoPaths(a, b string) []client.Path {
	fwd, rev := uuid.MustParse("0195f7a4-2222-7000-8000-000000000001"), uuid.MustParse("0195f7a4-2222-7000-8000-000000000002")
	link := uuid.MustParse("0195f7a4-2222-7000-8000-0000000000ff")
	n1, n2 := uuid.MustParse(testNode), uuid.MustParse(testPeer)
	return []client.Path{
		{Id: fwd, ReverseId: rev, LinkId: link, LocalNodeId: n1, RemoteNodeId: n2, LocalAddress: a, RemoteAddress: b, Priority: 1},
		{Id: rev, ReverseId: fwd, LinkId: link, LocalNodeId: n2, RemoteNodeId: n1, LocalAddress: b, RemoteAddress: a, Priority: 1},
	}
}

func TestPathManagerRefusesForeignPackets(t *testing.T) {
	m := newPathManager(testLogger(t), newMetrics(), DefaultPathPort)
	m.configure(pathsConfig{ClusterID: testCluster, NodeID: testNode, Key: pathKey, Interval: 100 * time.Millisecond,
		DeadAfter: 3, Paths: twoPaths("198.18.1.11", "198.18.1.12"), Peers: []string{testPeer, "0195f7a4-1111-7000-8000-000000000003"}})
	now := time.Now()
	good := samplePacket() // testPeer → testNode on the reverse path
	mut := func(f func(*pathPacket)) []byte {
		p := good
		p.Seq = uint64(now.UnixNano())
		f(&p)
		return p.marshal(pathKey)
	}
	other := uuid.MustParse("0195f7a4-9999-7000-8000-000000000009")
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"wrong key", (&good).marshal([]byte("k")), "bad_mac"},
		{"wrong cluster", mut(func(p *pathPacket) { p.Cluster = other }), "wrong_cluster"},
		{"wrong receiver", mut(func(p *pathPacket) { p.Receiver = other }), "wrong_receiver"},
		{"unknown path", mut(func(p *pathPacket) { p.Path = other }), "unknown_path"},
		{"wrong sender", mut(func(p *pathPacket) { p.Sender = other }), "wrong_sender"},
	} {
		if got := m.handle(tc.b, now); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if v, n := m.visible(now); v != 1 || n != 3 {
		t.Fatalf("visible %d of %d before any valid packet", v, n)
	}
	ok := mut(func(*pathPacket) {})
	if got := m.handle(ok, now); got != "" {
		t.Fatalf("valid packet dropped: %s", got)
	}
	if got := m.handle(ok, now); got != "replay" {
		t.Fatalf("replayed packet: %q", got)
	}
	if v, n := m.visible(now); v != 2 || n != 3 {
		t.Fatalf("visible %d of %d", v, n)
	}
	if v, _ := m.visible(now.Add(300 * time.Millisecond)); v != 1 {
		t.Fatal("the peer stays visible after 3 silent intervals")
	}
	reps := m.reports()
	if len(reps) != 1 || reps[0].PeerNodeId.String() != testPeer {
		t.Fatalf("reports %+v", reps)
	}
}

// TestPathsOverLoopback runs two path managers, as two nodes at 127.0.0.1
// and 127.0.0.2, on a shared port.
func TestPathsOverLoopback(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("127.0.0.2 unusable: %v", err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()

	paths := twoPaths("127.0.0.1", "127.0.0.2")
	iv := 20 * time.Millisecond
	a := newPathManager(testLogger(t), newMetrics(), port)
	a.configure(pathsConfig{ClusterID: testCluster, NodeID: testNode, Key: pathKey, Interval: iv, DeadAfter: 3, Paths: paths, Peers: []string{testPeer}})
	b := newPathManager(testLogger(t), newMetrics(), port)
	b.configure(pathsConfig{ClusterID: testCluster, NodeID: testPeer, Key: pathKey, Interval: iv, DeadAfter: 3, Paths: paths, Peers: []string{testNode}})

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	ctxB, cancelB := context.WithCancel(ctx)
	wg.Add(2)
	go func() { defer wg.Done(); a.run(ctx) }()
	go func() { defer wg.Done(); b.run(ctxB) }()
	defer func() {
		cancel()
		wg.Wait()
	}()

	testkit.Eventually(t, 0, "both nodes see each other with an RTT", func() bool {
		va, _ := a.visible(time.Now())
		vb, _ := b.visible(time.Now())
		sa, sb := a.snapshot(), b.snapshot()
		return va == 2 && vb == 2 && len(sa) == 1 && sa[0].HasRTT && len(sb) == 1 && sb[0].HasRTT
	})
	s := a.snapshot()[0]
	if s.RTT <= 0 || s.RTT > time.Second {
		t.Errorf("rtt %v", s.RTT)
	}
	testkit.Eventually(t, 0, "no loss over loopback", func() bool { return a.snapshot()[0].Loss < 0.2 })
	if v, n := a.visible(time.Now()); !majority(v, n) {
		t.Errorf("2 of 2 is a majority")
	}

	cancelB() // node b goes silent
	testkit.Eventually(t, 0, "a sees the path down", func() bool {
		v, _ := a.visible(time.Now())
		return v == 1 && !a.snapshot()[0].Up
	})
	rep := a.reports()
	if rep[0].State != client.PathReportStateDown || *rep[0].Loss != 1 {
		t.Errorf("report %+v", rep[0])
	}
	if v, n := a.visible(time.Now()); majority(v, n) {
		t.Errorf("alone in a 2-node cluster is not a majority")
	}
}

// TestSeenByNeedsAMajorityThatEchoesThisNode protects the fence guard's
// vouch: a node may be kept serving past its lease only while a majority
// of the cluster (itself included) is known, from the peers' echoes of its
// own packets, to see it, and only until those peers could have found it
// silent. Hearing peers is not enough: a node whose packets no longer
// reach them (a stuck sender, a one-way link) gets no vouch.
func TestSeenByNeedsAMajorityThatEchoesThisNode(t *testing.T) {
	m := newPathManager(testLogger(t), newMetrics(), 0)
	m.interval, m.deadAfter = 100*time.Millisecond, 3
	m.epoch = time.Now().Add(-time.Hour) // the agent has run for a while
	now := time.Now()
	nowNS := m.nowNS()
	link := func(peer string, heard time.Time, echoedNS int64) *pathLink {
		return &pathLink{id: peer + "-path", peer: peer, st: linkState{lastRecv: heard, echoedNS: echoedNS}}
	}
	// A 5-node cluster: 4 peers; a majority is this node and 2 peers.
	m.peers = map[string]bool{"p1": true, "p2": true, "p3": true, "p4": true}
	m.links = map[string]*pathLink{
		"a": link("p1", now, nowNS-10*int64(time.Millisecond)),
		"b": link("p2", now, nowNS-50*int64(time.Millisecond)),
		"c": link("p3", now, 0), // heard, never echoed us: one-way
		"d": link("p4", now.Add(-time.Second), nowNS),
	}
	until, ok := m.seenBy(now, now.Add(-time.Minute))
	if !ok {
		t.Fatal("no vouch although p1 and p2 echo this node")
	}
	// The second-newest echo (p2's, 50 ms ago) plus the dead-after time
	// less a quarter interval.
	if want := 225 * time.Millisecond; until < want-5*time.Millisecond || until > want+5*time.Millisecond {
		t.Fatalf("seen until %v from now, want about %v", until, want)
	}
	// A gap in p2's echoes after the last acknowledged heartbeat: p2 may
	// have reported this node dead then; it no longer counts.
	m.links["b"].st.gapNS = nowNS - 20*int64(time.Millisecond)
	if _, ok := m.seenBy(now, now.Add(-time.Second)); ok {
		t.Fatal("vouch although p2's view of this node had a gap since the last lease")
	}
	if _, ok := m.seenBy(now, now); !ok {
		t.Fatal("a gap before the last acknowledged heartbeat must not count")
	}
	delete(m.links, "b")
	if _, ok := m.seenBy(now, now.Add(-time.Minute)); ok {
		t.Fatal("vouch with only one peer echoing (p3 only heard, p4 silent)")
	}
}
