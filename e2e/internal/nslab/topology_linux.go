package nslab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Topology is a test network: a bridge in its own namespace, the host
// (root namespace) attached with an address, and one namespace per node
// with eth0 and eth1 on the bridge. Addresses are in 198.19.K.0/24
// (RFC 2544's benchmarking range), K picked so that no interface of the
// host uses it already.
type Topology struct {
	ID     string
	Subnet string // "198.19.K"
	Bridge string // namespace of the bridge
	HostIf string // root-namespace veth
	Nodes  []*Node

	// nlMu serializes the netlink queries of Holders (the invariant
	// checker and a test may sample at once).
	nlMu sync.Mutex
}

// Node is one node's network namespace.
type Node struct {
	NS   string
	Addr string // eth0's address
	// brPort and brPort1 are the bridge-side ends of eth0 and eth1:
	// downing them cuts the node's links.
	brPort, brPort1 string

	once sync.Once
	nl   *netlink.Handle
}

// RequireRoot returns an error unless the process can build namespaces.
func RequireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it builds nodes out of network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("needs iproute2's ip: %w (apt-get install -y iproute2)", err)
	}
	return nil
}

// IP runs ip(8) with args.
func IP(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewTopology builds the network for n nodes. Namespace and interface
// names start with prefix (two or three letters). On error, what was
// built is removed.
func NewTopology(prefix string, n int) (top *Topology, err error) {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	top = &Topology{ID: id, Bridge: prefix + "b" + id, HostIf: prefix + "h" + id}
	out, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for k := int(b[0])%200 + 20; ; k++ {
		if k > 254 {
			return nil, errors.New("no free 198.19.K.0/24 subnet")
		}
		if !strings.Contains(string(out), fmt.Sprintf(" 198.19.%d.", k)) {
			top.Subnet = fmt.Sprintf("198.19.%d", k)
			break
		}
	}
	defer func() {
		if err != nil {
			top.Destroy()
		}
	}()
	steps := [][]string{
		{"netns", "add", top.Bridge},
		{"-n", top.Bridge, "link", "set", "lo", "up"},
		{"-n", top.Bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", top.Bridge, "link", "set", "br0", "up"},
		{"link", "add", top.HostIf, "type", "veth", "peer", "name", "up0", "netns", top.Bridge},
		{"-n", top.Bridge, "link", "set", "up0", "master", "br0", "up"},
		{"addr", "add", top.HostAddr() + "/24", "dev", top.HostIf},
		{"link", "set", top.HostIf, "up"},
	}
	for i := range n {
		nd := &Node{
			NS:      fmt.Sprintf("%sn%s-%d", prefix, id, i+1),
			Addr:    fmt.Sprintf("%s.%d", top.Subnet, 11+i),
			brPort:  fmt.Sprintf("n%da", i+1),
			brPort1: fmt.Sprintf("n%db", i+1),
		}
		top.Nodes = append(top.Nodes, nd)
		steps = append(steps, []string{"netns", "add", nd.NS}, []string{"-n", nd.NS, "link", "set", "lo", "up"})
		for _, l := range []struct{ port, dev string }{{nd.brPort, "eth0"}, {nd.brPort1, "eth1"}} {
			steps = append(steps,
				[]string{"-n", top.Bridge, "link", "add", l.port, "type", "veth", "peer", "name", l.dev, "netns", nd.NS},
				[]string{"-n", top.Bridge, "link", "set", l.port, "master", "br0", "up"},
				[]string{"-n", nd.NS, "link", "set", l.dev, "up"})
		}
		steps = append(steps, []string{"-n", nd.NS, "addr", "add", nd.Addr + "/24", "dev", "eth0"})
	}
	for _, s := range steps {
		if err := IP(s...); err != nil {
			return top, err
		}
	}
	return top, nil
}

// HostAddr is the host's address on the test network.
func (t *Topology) HostAddr() string { return t.Subnet + ".1" }

// VIP returns the i-th virtual address of the test network.
func (t *Topology) VIP(i int) string { return fmt.Sprintf("%s.%d", t.Subnet, 100+i) }

// Destroy kills every process of the node namespaces (by PID) and removes
// the namespaces, the host's veth and the bridge. It is safe to call more
// than once.
func (t *Topology) Destroy() {
	for _, nd := range t.Nodes {
		if nd.nl != nil {
			nd.nl.Close()
			nd.nl = nil
		}
	}
	for _, nd := range t.Nodes {
		KillNamespace(nd.NS)
	}
	for _, nd := range t.Nodes {
		_ = exec.Command("ip", "netns", "del", nd.NS).Run()
	}
	_ = exec.Command("ip", "link", "del", t.HostIf).Run()
	_ = exec.Command("ip", "netns", "del", t.Bridge).Run()
}

// KillNamespace SIGKILLs every process in a network namespace, by PID.
func KillNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// SetLink sets node i's veths' bridge ends up or down: the node's eth0
// and eth1 lose carrier, as when a cable is pulled.
func (t *Topology) SetLink(i int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	for _, p := range []string{t.Nodes[i].brPort, t.Nodes[i].brPort1} {
		if err := IP("-n", t.Bridge, "link", "set", p, state); err != nil {
			return err
		}
	}
	return nil
}

// ResetAddrs flushes node i's addresses and gives eth0 its own back: what
// a reboot leaves.
func (t *Topology) ResetAddrs(i int) error {
	nd := t.Nodes[i]
	for _, dev := range []string{"eth0", "eth1"} {
		if err := IP("-n", nd.NS, "addr", "flush", "dev", dev); err != nil {
			return err
		}
	}
	return IP("-n", nd.NS, "addr", "add", nd.Addr+"/24", "dev", "eth0")
}

// Holders returns the indexes of the nodes whose namespace holds addr on
// any interface, through a netlink handle per namespace (cheap enough to
// sample every few milliseconds). Safe for concurrent use.
func (t *Topology) Holders(addr string) []int {
	t.nlMu.Lock()
	defer t.nlMu.Unlock()
	want := net.ParseIP(addr)
	var out []int
	for i, nd := range t.Nodes {
		h := nd.netlink()
		if h == nil {
			continue
		}
		as, err := h.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range as {
			if a.IP.Equal(want) {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

func (nd *Node) netlink() *netlink.Handle {
	nd.once.Do(func() {
		ns, err := netns.GetFromName(nd.NS)
		if err != nil {
			return
		}
		defer ns.Close()
		nd.nl, _ = netlink.NewHandleAt(ns)
	})
	return nd.nl
}

// Listeners returns the indexes of the nodes with a TCP listener on
// addr:port.
func (t *Topology) Listeners(addr string, port int) []int {
	ip := net.ParseIP(addr).To4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port)
	var out []int
	for i, nd := range t.Nodes {
		b, err := readNetTCP(nd.NS)
		if err == nil && listening(b, want) {
			out = append(out, i)
		}
	}
	return out
}

func listening(table, local string) bool {
	for l := range strings.SplitSeq(table, "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[1] == local && f[3] == "0A" {
			return true
		}
	}
	return false
}

// readNetTCP reads /proc/net/tcp as seen from a network namespace, by
// entering it on a locked thread (no process is spawned).
func readNetTCP(ns string) (string, error) {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return "", err
	}
	defer f.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return "", err
	}
	defer self.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return "", err
	}
	b, rerr := os.ReadFile("/proc/thread-self/net/tcp")
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the other namespace: let it die with the
		// goroutine instead of returning it to the pool.
		return "", err
	}
	runtime.UnlockOSThread()
	return string(b), rerr
}

// Isolate detaches (cut) or reattaches node i's veths from the bridge: the
// node's interfaces keep their carrier but reach nobody, the control
// plane and every peer lost at once (a partition, not a dead NIC).
func (t *Topology) Isolate(i int, cut bool) error {
	for _, p := range []string{t.Nodes[i].brPort, t.Nodes[i].brPort1} {
		args := []string{"-n", t.Bridge, "link", "set", p, "nomaster"}
		if !cut {
			args = []string{"-n", t.Bridge, "link", "set", p, "master", "br0"}
		}
		if err := IP(args...); err != nil {
			return err
		}
	}
	return nil
}

// CutCommand is a shell command that cuts node i's cables, as SetLink(i,
// false) does: for an operator to type (the demo prints it).
func (t *Topology) CutCommand(i int) string {
	nd := t.Nodes[i]
	return fmt.Sprintf("ip -n %s link set %s down; ip -n %s link set %s down", t.Bridge, nd.brPort, t.Bridge, nd.brPort1)
}

// CrashCommand is a shell command that crashes node i as Cluster.Crash
// does: every process of its namespace SIGKILLed, then its cables cut.
func (t *Topology) CrashCommand(i int) string {
	return fmt.Sprintf("ip netns pids %s | xargs -r kill -9; %s", t.Nodes[i].NS, t.CutCommand(i))
}
