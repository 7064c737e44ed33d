package nslab

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// labForTest builds a two-node topology, or skips t without root.
func labForTest(t *testing.T) *Topology {
	t.Helper()
	if err := RequireRoot(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("skipped: the invariant checker's test builds network namespaces: %v", err)
	}
	top, err := NewTopology("nt", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(top.Destroy)
	return top
}

// vipAddr is the test network's first virtual IP on node i's eth0.
func vipAddr(t *testing.T, top *Topology, i int) (*netlink.Handle, netlink.Link, *netlink.Addr) {
	t.Helper()
	ns, err := netns.GetFromName(top.Nodes[i].NS)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(top.VIP(0) + "/24")
	if err != nil {
		t.Fatal(err)
	}
	return h, l, a
}

// TestInvariantSeesShortOverlap holds the VIP in two namespaces at once
// for about 3 ms, five times: the checker must report five overlaps of
// about that length (a sampler with a 5 ms pause and tens of ms per
// sample under load would miss most of them).
func TestInvariantSeesShortOverlap(t *testing.T) {
	top := labForTest(t)
	h0, l0, a0 := vipAddr(t, top, 0)
	h1, l1, a1 := vipAddr(t, top, 1)
	inv, err := WatchInvariant(top, top.VIP(0), 7000, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Stop()
	inv.SetPhase("quiet")
	time.Sleep(50 * time.Millisecond)
	inv.SetPhase("overlap")
	const reps, hold = 5, 3 * time.Millisecond
	var want time.Duration
	for range reps {
		if err := h0.AddrAdd(l0, a0); err != nil {
			t.Fatal(err)
		}
		if err := h1.AddrAdd(l1, a1); err != nil {
			t.Fatal(err)
		}
		both := time.Now()
		time.Sleep(hold)
		if err := h0.AddrDel(l0, a0); err != nil {
			t.Fatal(err)
		}
		want += time.Since(both)
		time.Sleep(20 * time.Millisecond) // node 1 alone
		if err := h1.AddrDel(l1, a1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the last events
	inv.SetPhase("after")
	r := inv.Report("overlap")
	t.Logf("overlap phase: %v (held both ~%v in all)", r, want)
	if r.HolderEpisodes != reps {
		t.Errorf("saw %d overlaps of holders, want %d: %v", r.HolderEpisodes, reps, r)
	}
	// The events are timestamped when read: allow for scheduling delays,
	// but not for an overlap missed or made up.
	if r.HolderOverlap < want/2 || r.HolderOverlap > want+50*time.Millisecond {
		t.Errorf("overlap %v, the addresses were both held about %v", r.HolderOverlap, want)
	}
	if q := inv.Report("quiet"); q.Violated() {
		t.Errorf("quiet phase reported two copies: %v", q)
	}
	if e := inv.Errors(); len(e) > 0 {
		t.Errorf("checker errors: %v", e)
	}

	// An excluded node (crashed) does not count.
	inv.SetPhase("excluded")
	inv.Exclude(0)
	for _, x := range []struct {
		h *netlink.Handle
		l netlink.Link
		a *netlink.Addr
	}{{h0, l0, a0}, {h1, l1, a1}} {
		if err := x.h.AddrAdd(x.l, x.a); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	if r := inv.Report("excluded"); r.Violated() {
		t.Errorf("an excluded node's address counted: %v", r)
	}
	// Included again while both hold it: an overlap from then on.
	inv.Include(0)
	time.Sleep(5 * time.Millisecond)
	_ = h0.AddrDel(l0, a0)
	time.Sleep(10 * time.Millisecond)
	if r := inv.Report("excluded"); r.HolderEpisodes != 1 || r.HolderOverlap < 2*time.Millisecond {
		t.Errorf("after Include, want one overlap of about 5 ms: %v", r)
	}

	// Listeners: the port open in both namespaces for 30 ms (the VIP is
	// still on node 1; node 0 listens with IP_FREEBIND).
	inv.SetPhase("listeners")
	l0s := listenIn(t, top.Nodes[0].NS, top.VIP(0)+":7000")
	l1s := listenIn(t, top.Nodes[1].NS, top.VIP(0)+":7000")
	time.Sleep(30 * time.Millisecond)
	l0s.Close()
	time.Sleep(10 * time.Millisecond)
	l1s.Close()
	time.Sleep(10 * time.Millisecond)
	r = inv.Report("listeners")
	_, period := inv.Stats()
	t.Logf("listeners phase: %v; listener read period per node %v", r, period)
	if r.ListenerViolations == 0 {
		t.Errorf("the port open on two nodes for 30 ms was not seen: %v", r)
	}
}

// listenIn opens a TCP listener on addr in namespace ns (with
// IP_FREEBIND: the address need not be there).
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := InNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		lf := os.NewFile(uintptr(fd), "listener")
		defer lf.Close()
		_ = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
		tcp, err := net.ResolveTCPAddr("tcp4", addr)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrInet4{Port: tcp.Port}
		copy(sa.Addr[:], tcp.IP.To4())
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		if err := unix.Listen(fd, 16); err != nil {
			return err
		}
		ln, err = net.FileListener(lf)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// BenchmarkListenerRead compares the ways of telling whether a node
// listens on a port: /proc/net/tcp through setns at every read (the
// former sampler, Topology.Listeners), /proc/net/tcp kept open and read
// again from offset 0, and the sock_diag dump of listeners the checker
// uses.
func BenchmarkListenerRead(b *testing.B) {
	if err := RequireRoot(); err != nil {
		b.Skipf("skipped: builds network namespaces: %v", err)
	}
	top, err := NewTopology("nb", 1)
	if err != nil {
		b.Fatal(err)
	}
	defer top.Destroy()
	ns := top.Nodes[0].NS
	ip := net.ParseIP(top.VIP(0)).To4()
	b.Run("proc-setns-each", func(b *testing.B) {
		for b.Loop() {
			if _, err := readNetTCP(ns); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proc-open-once", func(b *testing.B) {
		var f *os.File
		if err := InNS(ns, func() (err error) { f, err = os.Open("/proc/thread-self/net/tcp"); return err }); err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for b.Loop() {
			if _, err := f.ReadAt(buf, 0); err != nil && err.Error() != "EOF" {
				b.Fatal(err)
			}
		}
	})
	b.Run("sock-diag", func(b *testing.B) {
		var d *diagSocket
		if err := InNS(ns, func() (err error) { d, err = newDiagSocket(); return err }); err != nil {
			b.Fatal(err)
		}
		defer d.close()
		for b.Loop() {
			if _, err := d.listening(ip, 7000); err != nil {
				b.Fatal(err)
			}
		}
	})
}
