package nslab

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Invariant watches the never-two-copies invariant of a virtual IP and
// its service port until stopped:
//
//   - who holds the address is event-driven: a netlink subscription to
//     address changes in every node's namespace (existing addresses
//     listed first) keeps each node's holding state, and the time with
//     two or more nodes holding it is measured as intervals (total,
//     episodes, longest), so an overlap of a millisecond counts;
//   - who listens on addr:port is sampled: one goroutine per node asks
//     the node's kernel for its TCP listeners (a sock_diag dump over a
//     netlink socket created once in the node's namespace) every
//     `every`; a read after which two nodes listen is a violating sample.
//
// Excluded nodes (crashed: a real machine's addresses vanish with it)
// count for neither until included again. Results are kept per phase, a
// label the caller sets (e.g. "fault", "restore"); an overlap that spans
// a phase change is split between the phases.
type Invariant struct {
	top   *Topology
	addr  net.IP
	port  int
	every time.Duration

	mu        sync.Mutex
	excluded  map[int]bool
	phase     string
	stats     map[string]*phaseStats
	holds     []map[int]bool // per node: link indexes with addr
	listening []bool         // per node: as of its last read
	reads     []int          // per node: /proc/net/tcp reads so far
	events    int            // address events seen
	errs      []string
	started   time.Time
	// An ongoing overlap of holders: since when it is accounted to the
	// current phase, and when it began.
	overlapSince, overlapBegan time.Time
	stopping                   bool

	stop chan struct{}
	wg   sync.WaitGroup
}

type phaseStats struct {
	holderOverlap  time.Duration
	holderEpisodes int
	holderLongest  time.Duration
	holderFirst    string
	samples        int
	violations     int
	listenFirst    string
}

// Report is what an Invariant saw in one phase.
type Report struct {
	// HolderOverlap is the total time two or more nodes held the address,
	// in HolderEpisodes episodes, the longest HolderLongest (over its
	// whole length, phases included).
	HolderOverlap  time.Duration
	HolderEpisodes int
	HolderLongest  time.Duration
	// ListenerSamples reads of a node's listeners were made; after
	// ListenerViolations of them two nodes listened on the port.
	ListenerSamples    int
	ListenerViolations int
	// First describes the first overlap of holders and of listeners.
	First string
}

// Violated tells whether the phase saw two copies.
func (r Report) Violated() bool { return r.HolderEpisodes > 0 || r.ListenerViolations > 0 }

// Add adds o to r (for totals over runs).
func (r *Report) Add(o Report) {
	r.HolderOverlap += o.HolderOverlap
	r.HolderEpisodes += o.HolderEpisodes
	r.HolderLongest = max(r.HolderLongest, o.HolderLongest)
	r.ListenerSamples += o.ListenerSamples
	r.ListenerViolations += o.ListenerViolations
	if r.First == "" {
		r.First = o.First
	}
}

func (r Report) String() string {
	return fmt.Sprintf("address held by two nodes %.1f ms in %d episodes (longest %.1f ms); port open on two nodes in %d of %d samples",
		msf(r.HolderOverlap), r.HolderEpisodes, msf(r.HolderLongest), r.ListenerViolations, r.ListenerSamples)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WatchInvariant starts watching addr and addr:port, reading every node's
// listeners every `every` (0: back to back). It fails if a namespace
// cannot be subscribed to or entered.
func WatchInvariant(top *Topology, addr string, port int, every time.Duration) (*Invariant, error) {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		return nil, fmt.Errorf("invariant: %q is not an IPv4 address", addr)
	}
	n := len(top.Nodes)
	inv := &Invariant{top: top, addr: ip, port: port, every: every,
		excluded: map[int]bool{}, stats: map[string]*phaseStats{},
		holds: make([]map[int]bool, n), listening: make([]bool, n), reads: make([]int, n),
		started: time.Now(), stop: make(chan struct{})}
	for i := range n {
		inv.holds[i] = map[int]bool{}
	}
	for i, nd := range top.Nodes {
		ns, err := netns.GetFromName(nd.NS)
		if err != nil {
			inv.Stop()
			return nil, fmt.Errorf("invariant: namespace %s: %w", nd.NS, err)
		}
		ready := make(chan error, 1)
		inv.wg.Add(2)
		go inv.watchAddrs(i, ns, ready)
		if err := <-ready; err != nil {
			inv.Stop()
			return nil, err
		}
		ready = make(chan error, 1)
		go inv.sampleListeners(i, nd.NS, ready)
		if err := <-ready; err != nil {
			inv.Stop()
			return nil, err
		}
	}
	return inv, nil
}

// watchAddrs follows node i's address events until stopped. A lost
// subscription (e.g. the socket's buffer overran) is recorded as an
// error and replaced by a new one that lists the addresses again.
func (inv *Invariant) watchAddrs(i int, ns netns.NsHandle, ready chan<- error) {
	defer inv.wg.Done()
	defer ns.Close()
	for first := true; ; first = false {
		ch := make(chan netlink.AddrUpdate, 4096)
		done := make(chan struct{})
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			Namespace: &ns, ListExisting: true, ReceiveBufferSize: 1 << 20, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { inv.fail(fmt.Errorf("node %d's address events: %w", i, err)) },
		})
		if err != nil {
			err = fmt.Errorf("invariant: subscribe to node %d's addresses: %w", i, err)
			if first {
				ready <- err
				close(done)
				return
			}
			inv.fail(err)
			select {
			case <-inv.stop:
				close(done)
				return
			case <-time.After(10 * time.Millisecond):
				continue
			}
		}
		if first {
			ready <- nil
		} else {
			// Start over from the listing the new subscription sends.
			inv.mu.Lock()
			clear(inv.holds[i])
			inv.accountLocked(time.Now())
			inv.mu.Unlock()
		}
		lost := false
		for !lost {
			select {
			case <-inv.stop:
				close(done)
				for range ch { // let the receiver exit
				}
				return
			case u, ok := <-ch:
				if !ok {
					lost = true
					break
				}
				now := time.Now()
				inv.mu.Lock()
				inv.events++
				if u.LinkAddress.IP.Equal(inv.addr) {
					if u.NewAddr {
						inv.holds[i][u.LinkIndex] = true
					} else {
						delete(inv.holds[i], u.LinkIndex)
					}
					inv.accountLocked(now)
				}
				inv.mu.Unlock()
			}
		}
		close(done)
	}
}

func (inv *Invariant) fail(err error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if !inv.stopping {
		inv.errs = append(inv.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
	}
}

func (inv *Invariant) st(phase string) *phaseStats {
	s := inv.stats[phase]
	if s == nil {
		s = &phaseStats{}
		inv.stats[phase] = s
	}
	return s
}

// holdersLocked returns the live nodes holding the address.
func (inv *Invariant) holdersLocked() []int {
	var out []int
	for i, h := range inv.holds {
		if len(h) > 0 && !inv.excluded[i] {
			out = append(out, i)
		}
	}
	return out
}

// accountLocked opens or closes an overlap of holders at now.
func (inv *Invariant) accountLocked(now time.Time) {
	holders := inv.holdersLocked()
	s := inv.st(inv.phase)
	switch {
	case len(holders) > 1 && inv.overlapSince.IsZero():
		inv.overlapSince, inv.overlapBegan = now, now
		s.holderEpisodes++
		if s.holderFirst == "" {
			s.holderFirst = fmt.Sprintf("at %s: address held by nodes %v (indexes from 0)", now.Format("15:04:05.000000"), holders)
		}
	case len(holders) < 2 && !inv.overlapSince.IsZero():
		s.holderOverlap += now.Sub(inv.overlapSince)
		s.holderLongest = max(s.holderLongest, now.Sub(inv.overlapBegan))
		inv.overlapSince, inv.overlapBegan = time.Time{}, time.Time{}
	}
}

// sampleListeners asks node i's kernel for its TCP listeners every
// inv.every until stopped, over a sock_diag netlink socket opened once in
// the node's namespace (a dump of the listening sockets only: /proc/net/tcp
// walks every connection of the host and took milliseconds a read).
func (inv *Invariant) sampleListeners(i int, ns string, ready chan<- error) {
	defer inv.wg.Done()
	var d *diagSocket
	err := InNS(ns, func() (err error) { d, err = newDiagSocket(); return err })
	if err != nil {
		ready <- fmt.Errorf("invariant: node %d's sock_diag socket: %w", i, err)
		return
	}
	defer d.close()
	ready <- nil
	for {
		select {
		case <-inv.stop:
			return
		default:
		}
		on, err := d.listening(inv.addr, inv.port)
		if err != nil {
			inv.fail(fmt.Errorf("node %d's listeners: %w", i, err))
		} else {
			inv.sampled(i, on)
		}
		if inv.every > 0 {
			time.Sleep(inv.every)
		}
	}
}

// sampled records a read of node i's listeners.
func (inv *Invariant) sampled(i int, on bool) {
	now := time.Now()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.reads[i]++
	inv.listening[i] = on
	s := inv.st(inv.phase)
	s.samples++
	var running []int
	for j, l := range inv.listening {
		if l && !inv.excluded[j] {
			running = append(running, j)
		}
	}
	if len(running) > 1 {
		s.violations++
		if s.listenFirst == "" {
			s.listenFirst = fmt.Sprintf("at %s: port %d open on nodes %v (indexes from 0)", now.Format("15:04:05.000000"), inv.port, running)
		}
	}
}

// InNS runs f on a thread that enters network namespace ns and leaves
// it again before it is unlocked: no thread of this process stays in a
// node's namespace (were it the main thread, ip netns pids would count
// the process in and KillNamespace would kill it). Sockets f creates
// stay in ns.
func InNS(ns string, f func() error) error {
	nsf, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer nsf.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stuck in the node's namespace: leave the thread locked (it
		// dies with the goroutine).
		return fmt.Errorf("return from namespace %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// diagSocket is a NETLINK_SOCK_DIAG socket (of the namespace it was
// created in).
type diagSocket struct {
	fd  int
	seq uint32
	buf []byte
}

func newDiagSocket() (*diagSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &diagSocket{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (d *diagSocket) close() { unix.Close(d.fd) }

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpListen        = 10 // TCP_LISTEN
)

// listening dumps the namespace's IPv4 TCP listeners and tells whether
// one is bound to ip:port.
func (d *diagSocket) listening(ip net.IP, port int) (bool, error) {
	d.seq++
	req := make([]byte, unix.SizeofNlMsghdr+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], d.seq)
	r := req[unix.SizeofNlMsghdr:]
	r[0], r[1] = unix.AF_INET, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], 1<<tcpListen) // listeners only
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, err
	}
	found := false
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		msgs, err := syscall.ParseNetlinkMessage(d.buf[:n])
		if err != nil {
			return false, err
		}
		for _, m := range msgs {
			if m.Header.Seq != d.seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return found, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return false, syscall.Errno(-e)
					}
				}
				return found, nil
			}
			// struct inet_diag_msg: family, state, timer, retrans, then
			// inet_diag_sockid: sport, dport (big endian), src[4], ...
			if len(m.Data) < 12 || m.Data[1] != tcpListen {
				continue
			}
			if int(binary.BigEndian.Uint16(m.Data[4:])) == port && net.IP(m.Data[8:12]).Equal(ip) {
				found = true
			}
		}
	}
}

// Exclude stops counting node i (it crashed: what its namespace still
// holds would be gone with a real machine); Include counts it again.
func (inv *Invariant) Exclude(i int) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.excluded[i] = true
	inv.accountLocked(time.Now())
}

// Include counts node i again.
func (inv *Invariant) Include(i int) {
	// The node's address events may still be on their way (a loaded
	// host delays the reader): a Reboot's flush, not yet read, would
	// count the stale address as held from now on. Its kernel, asked
	// now, is the truth; later events go on updating from there.
	held := slices.Contains(inv.top.Holders(inv.addr.String()), i)
	inv.mu.Lock()
	defer inv.mu.Unlock()
	delete(inv.excluded, i)
	if !held {
		clear(inv.holds[i])
	}
	inv.accountLocked(time.Now())
}

// SetPhase labels what follows. An ongoing overlap is split: the part so
// far belongs to the old phase, the rest to the new one (as an episode of
// its own there).
func (inv *Invariant) SetPhase(p string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if p == inv.phase {
		return
	}
	now := time.Now()
	if !inv.overlapSince.IsZero() {
		old := inv.st(inv.phase)
		old.holderOverlap += now.Sub(inv.overlapSince)
		old.holderLongest = max(old.holderLongest, now.Sub(inv.overlapBegan))
		inv.overlapSince = now
		inv.st(p).holderEpisodes++
	}
	inv.phase = p
}

// Report returns what the phase saw so far (an ongoing overlap up to
// now).
func (inv *Invariant) Report(phase string) Report {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	s := inv.st(phase)
	r := Report{HolderOverlap: s.holderOverlap, HolderEpisodes: s.holderEpisodes, HolderLongest: s.holderLongest,
		ListenerSamples: s.samples, ListenerViolations: s.violations}
	if phase == inv.phase && !inv.overlapSince.IsZero() {
		now := time.Now()
		r.HolderOverlap += now.Sub(inv.overlapSince)
		r.HolderLongest = max(r.HolderLongest, now.Sub(inv.overlapBegan))
	}
	var first []string
	for _, f := range []string{s.holderFirst, s.listenFirst} {
		if f != "" {
			first = append(first, f)
		}
	}
	if len(first) > 0 {
		r.First = fmt.Sprint(first)
	}
	return r
}

// Holding returns the live nodes holding the address now, as the events
// tell.
func (inv *Invariant) Holding() []int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.holdersLocked()
}

// Errors returns what went wrong with the watching (lost subscriptions,
// unreadable tables): a checker with errors may have missed an overlap.
func (inv *Invariant) Errors() []string {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return slices.Clone(inv.errs)
}

// Stats returns the address events seen and, per node, the mean period
// of its listener reads since the start.
func (inv *Invariant) Stats() (events int, period []time.Duration) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	el := time.Since(inv.started)
	for _, n := range inv.reads {
		if n == 0 {
			period = append(period, -1)
		} else {
			period = append(period, el/time.Duration(n))
		}
	}
	return inv.events, period
}

// Reset clears the results of a phase (not an ongoing overlap, which
// counts again from now, as an episode, if the phase is current).
func (inv *Invariant) Reset(phase string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	delete(inv.stats, phase)
	if phase == inv.phase && !inv.overlapSince.IsZero() {
		inv.overlapSince = time.Now()
		inv.st(phase).holderEpisodes++
	}
}

// Stop stops watching (once) and waits for the watchers.
func (inv *Invariant) Stop() {
	inv.mu.Lock()
	if inv.stopping {
		inv.mu.Unlock()
		inv.wg.Wait()
		return
	}
	inv.stopping = true
	inv.mu.Unlock()
	close(inv.stop)
	inv.wg.Wait()
}
