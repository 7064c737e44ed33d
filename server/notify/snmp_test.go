package notify

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// trapReceiver is a UDP socket standing in for an SNMP manager; targets
// return v2c targets pointing at it.
func trapReceiver(t *testing.T) (host string, port int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return "127.0.0.1", pc.LocalAddr().(*net.UDPAddr).Port
}

func snmpTarget(id, host string, port int, version int64) backstop.Target {
	return backstop.Target{ID: id, Kind: backstop.TargetSNMP, Enabled: true, Version: version, Secret: []byte("sealed-" + id),
		SNMP: &backstop.SNMPConfig{Host: host, Port: port, Version: backstop.SNMPv2c}}
}

// sendTrap sends a test trap through the sink and returns the socket the
// target's cached sender used.
func sendTrap(t *testing.T, s *trapSink, tg backstop.Target) net.Conn {
	t.Helper()
	vars, oid, err := trapVarbinds([]byte(`{"seq":1,"id":"e1","type":"snmp.test","severity":"info","at":"2026-01-02T03:04:05Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	r := s.send(tg, backstop.SNMPSecrets{Community: "public"}, backstop.SNMPEngine{}, oid, vars, time.Second)
	if r.Err != nil {
		t.Fatalf("send to %s: %v", tg.ID, r.Err)
	}
	s.mu.Lock()
	x := s.senders[tg.ID]
	s.mu.Unlock()
	if x == nil || x.g == nil || x.g.Conn == nil {
		t.Fatalf("no cached sender for %s after a send", tg.ID)
	}
	return x.g.Conn
}

// closed reports whether c was closed (by us: writing to a UDP socket
// whose peer is gone does not fail with net.ErrClosed).
func closed(c net.Conn) bool {
	_, err := c.Write([]byte{0})
	return errors.Is(err, net.ErrClosed)
}

// A changed target gets a new socket at its next trap, and the old one is
// closed.
func TestTrapSenderReplacedWhenTargetChanges(t *testing.T) {
	host, port := trapReceiver(t)
	s := newTrapSink()
	defer s.sweep(nil, time.Time{})
	before := sendTrap(t, s, snmpTarget("t1", host, port, 1))
	if again := sendTrap(t, s, snmpTarget("t1", host, port, 1)); again != before || closed(before) {
		t.Fatal("an unchanged target did not keep its socket")
	}
	after := sendTrap(t, s, snmpTarget("t1", host, port, 2)) // version 2: changed
	if after == before || !closed(before) {
		t.Errorf("after a change: new socket %v, old one closed %v", after != before, closed(before))
	}
	if n := s.open(); n != 1 {
		t.Errorf("%d senders cached, want 1", n)
	}
}

// openSockets counts the process's open sockets (Linux), or -1.
func openSockets() int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// fakeBacklog is a Store whose only working method is DeliveryBacklog,
// listing targets.
type fakeBacklog struct {
	Store
	targets map[string]string // id → kind
}

// PruneDeliveries has nothing to prune (the sweep loop prunes at start).
func (f *fakeBacklog) PruneDeliveries(context.Context, time.Time, int) (int64, error) { return 0, nil }

func (f *fakeBacklog) DeliveryBacklog(context.Context) ([]backstop.TargetBacklog, error) {
	var bs []backstop.TargetBacklog
	for id, kind := range f.targets {
		bs = append(bs, backstop.TargetBacklog{TargetID: id, Kind: kind})
	}
	return bs, nil
}

// The sweep closes the socket of a deleted target, and of a target that
// has sent nothing for trapIdleTTL (say it was disabled), and keeps the
// others; Stop closes every socket.
func TestSweepClosesSocketsOfDeletedAndIdleTargets(t *testing.T) {
	host, port := trapReceiver(t)
	store := &fakeBacklog{targets: map[string]string{}}
	sealer, err := NewSealer([]byte("test-secret-key-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Store: store, Sealer: sealer, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	baseline := openSockets()
	conns := map[string]net.Conn{}
	for i := range 4 {
		id := "t" + strconv.Itoa(i)
		store.targets[id] = backstop.TargetSNMP
		conns[id] = sendTrap(t, svc.traps, snmpTarget(id, host, port, 1))
	}
	store.targets["w1"] = backstop.TargetWebhook
	if baseline >= 0 && openSockets() != baseline+4 {
		t.Fatalf("%d sockets open after traps to 4 targets; %d before", openSockets(), baseline)
	}

	delete(store.targets, "t0") // deleted
	if err := svc.sweepTraps(t.Context(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if baseline >= 0 && openSockets() != baseline+3 {
		t.Errorf("%d sockets open after t0 was deleted, want %d", openSockets(), baseline+3)
	}
	if !closed(conns["t0"]) || svc.traps.open() != 3 {
		t.Fatalf("after t0 was deleted: its socket closed %v, %d senders cached (want 3)", closed(conns["t0"]), svc.traps.open())
	}

	// t1 sends again later; t2 and t3 stay silent past the idle time.
	later := time.Now().Add(trapIdleTTL)
	svc.traps.sender(snmpTarget("t1", host, port, 1), later).mu.Unlock()
	if err := svc.sweepTraps(t.Context(), later.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"t1": false, "t2": true, "t3": true} {
		if got := closed(conns[id]); got != want {
			t.Errorf("after the idle time: %s closed %v, want %v", id, got, want)
		}
	}
	if n := svc.traps.open(); n != 1 {
		t.Errorf("%d senders cached, want 1 (t1)", n)
	}

	// The sweep's loop runs from Start to Stop; Stop closes what is left.
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := svc.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if baseline >= 0 && openSockets() != baseline {
		t.Errorf("%d sockets open after Stop, want %d as before", openSockets(), baseline)
	}
	if !closed(conns["t1"]) || svc.traps.open() != 0 {
		t.Errorf("after Stop: t1 closed %v, %d senders cached", closed(conns["t1"]), svc.traps.open())
	}
}

// Dropping a sender waits for a send in progress on it to end, then
// closes its socket; the next send gets a new sender, cached.
func TestDropWaitsForSendInProgress(t *testing.T) {
	host, port := trapReceiver(t)
	s := newTrapSink()
	defer s.sweep(nil, time.Time{})
	tg := snmpTarget("t1", host, port, 1)
	conn := sendTrap(t, s, tg)
	old := s.sender(tg, time.Now()) // as a send in progress holds it
	done := make(chan int)
	go func() { done <- s.sweep(nil, time.Time{}) }()
	for s.open() != 0 { // drop takes it out of the cache, then waits
		runtime.Gosched()
	}
	if closed(conn) {
		t.Fatal("the socket was closed under a send in progress")
	}
	old.mu.Unlock() // the send ends
	if n := <-done; n != 1 || !closed(conn) || !old.dropped {
		t.Fatalf("sweep dropped %d senders (want 1); socket closed %v", n, closed(conn))
	}
	if again := sendTrap(t, s, tg); again == conn || s.open() != 1 {
		t.Errorf("after the drop: new socket %v, %d senders cached", again != conn, s.open())
	}
}
