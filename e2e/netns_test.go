package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireRoot skips t when the test cannot create network namespaces, and
// fails it in CI, where the tests run as root and must not be skipped.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err != nil {
			t.Fatalf("needs iproute2's ip: %v (apt-get install -y iproute2)", err)
		}
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root (network namespaces); CI must run as root")
	}
	t.Skip("needs root: it builds nodes out of network namespaces (run as root, as CI does)")
}

// netTopology is a test network: a bridge in its own namespace, the host
// (root namespace) attached with an address where backstopd listens, and
// one namespace per node with eth0 and eth1 on the bridge. Addresses are
// in 198.19.K.0/24 (RFC 2544's benchmarking range), K picked so that no
// other interface of the host uses it.
type netTopology struct {
	t      *testing.T
	id     string
	subnet string // "198.19.K"
	bridge string // namespace of the bridge
	hostIf string // root-namespace veth
	nodes  []*netNode
}

// netNode is one node's network namespace.
type netNode struct {
	ns   string
	addr string // eth0's address
	// brPort and brPort1 are the bridge-side ends of eth0 and eth1:
	// downing them cuts the node's links.
	brPort, brPort1 string

	once sync.Once
	nl   *netlink.Handle
}

// hostAddr is the host's address on the test network.
func (n *netTopology) hostAddr() string { return n.subnet + ".1" }

// vip returns the i-th virtual address of the test network.
func (n *netTopology) vip(i int) string { return fmt.Sprintf("%s.%d", n.subnet, 100+i) }

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTopology builds the network for n nodes; t's cleanup removes it
// (processes inside must be ended first: see killNamespace).
func newTopology(t *testing.T, n int) *netTopology {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	top := &netTopology{t: t, id: id, bridge: "bsb" + id, hostIf: "bsh" + id}
	out, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for k := int(b[0])%200 + 20; ; k++ {
		if !strings.Contains(string(out), fmt.Sprintf(" 198.19.%d.", k)) {
			top.subnet = fmt.Sprintf("198.19.%d", k)
			break
		}
	}
	t.Cleanup(top.destroy)
	ipCmd(t, "netns", "add", top.bridge)
	ipCmd(t, "-n", top.bridge, "link", "set", "lo", "up")
	ipCmd(t, "-n", top.bridge, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", top.bridge, "link", "set", "br0", "up")
	ipCmd(t, "link", "add", top.hostIf, "type", "veth", "peer", "name", "up0", "netns", top.bridge)
	ipCmd(t, "-n", top.bridge, "link", "set", "up0", "master", "br0", "up")
	ipCmd(t, "addr", "add", top.hostAddr()+"/24", "dev", top.hostIf)
	ipCmd(t, "link", "set", top.hostIf, "up")
	for i := range n {
		nd := &netNode{
			ns:      fmt.Sprintf("bsn%s-%d", id, i+1),
			addr:    fmt.Sprintf("%s.%d", top.subnet, 11+i),
			brPort:  fmt.Sprintf("n%da", i+1),
			brPort1: fmt.Sprintf("n%db", i+1),
		}
		ipCmd(t, "netns", "add", nd.ns)
		ipCmd(t, "-n", nd.ns, "link", "set", "lo", "up")
		for _, l := range []struct{ port, dev string }{{nd.brPort, "eth0"}, {nd.brPort1, "eth1"}} {
			ipCmd(t, "-n", top.bridge, "link", "add", l.port, "type", "veth", "peer", "name", l.dev, "netns", nd.ns)
			ipCmd(t, "-n", top.bridge, "link", "set", l.port, "master", "br0", "up")
			ipCmd(t, "-n", nd.ns, "link", "set", l.dev, "up")
		}
		ipCmd(t, "-n", nd.ns, "addr", "add", nd.addr+"/24", "dev", "eth0")
		top.nodes = append(top.nodes, nd)
	}
	return top
}

// killNamespace SIGKILLs every process in a node's namespace, by PID.
func killNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (n *netTopology) destroy() {
	for _, nd := range n.nodes {
		if nd.nl != nil {
			nd.nl.Close()
		}
	}
	for _, nd := range n.nodes {
		killNamespace(nd.ns)
	}
	// Deleting a namespace deletes its veths, and their peers with them.
	for _, nd := range n.nodes {
		_ = exec.Command("ip", "netns", "del", nd.ns).Run()
	}
	_ = exec.Command("ip", "link", "del", n.hostIf).Run()
	_ = exec.Command("ip", "netns", "del", n.bridge).Run()
}

// setLink sets node i's veths' bridge ends up or down: the node's eth0
// and eth1 lose carrier, as when a cable is pulled or a switch port dies.
func (n *netTopology) setLink(i int, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	for _, p := range []string{n.nodes[i].brPort, n.nodes[i].brPort1} {
		ipCmd(n.t, "-n", n.bridge, "link", "set", p, state)
	}
}

// isolate detaches (or reattaches) node i's veths from the bridge: the
// node's interfaces keep their carrier but reach nobody, the control
// plane and every peer lost at once (a partition, not a dead NIC).
func (n *netTopology) isolate(i int, cut bool) {
	for _, p := range []string{n.nodes[i].brPort, n.nodes[i].brPort1} {
		if cut {
			ipCmd(n.t, "-n", n.bridge, "link", "set", p, "nomaster")
		} else {
			ipCmd(n.t, "-n", n.bridge, "link", "set", p, "master", "br0")
		}
	}
}

// holders returns the indexes of the nodes whose namespace holds addr on
// any interface. It asks netlink through a handle per namespace, cheap
// enough to sample every few milliseconds.
func (n *netTopology) holders(addr string) []int {
	want := net.ParseIP(addr)
	var out []int
	for i, nd := range n.nodes {
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

// netlink returns (opening once) a netlink handle in the node's namespace.
func (nd *netNode) netlink() *netlink.Handle {
	nd.once.Do(func() {
		ns, err := netns.GetFromName(nd.ns)
		if err != nil {
			return
		}
		defer ns.Close()
		nd.nl, _ = netlink.NewHandleAt(ns)
	})
	return nd.nl
}

// dialFromHost connects to addr:port from the host, through the test
// network.
func dialFromHost(addr string, port int, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), timeout)
}
