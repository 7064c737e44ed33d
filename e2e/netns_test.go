package e2e

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/internal/nslab"
)

// requireRoot skips t when the test cannot create network namespaces, and
// fails it in CI, where the tests run as root and must not be skipped.
func requireRoot(t *testing.T) {
	t.Helper()
	err := nslab.RequireRoot()
	switch {
	case err == nil:
	case os.Geteuid() == 0 || os.Getenv("CI") != "":
		t.Fatal(err, "(CI must run as root with iproute2)")
	default:
		t.Skip(err)
	}
}

// netTopology is the test network (see nslab.Topology, which builds it:
// a bridge namespace, the host attached at .1 where backstopd listens, and
// one namespace per node with eth0 and eth1 on the bridge), with the
// test's failure handling.
type netTopology struct {
	t      *testing.T
	lab    *nslab.Topology
	id     string
	subnet string // "198.19.K"
	nodes  []*netNode
}

// netNode is one node's network namespace.
type netNode struct {
	ns   string
	addr string // eth0's address
}

// hostAddr is the host's address on the test network.
func (n *netTopology) hostAddr() string { return n.lab.HostAddr() }

// vip returns the i-th virtual address of the test network.
func (n *netTopology) vip(i int) string { return n.lab.VIP(i) }

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if err := nslab.IP(args...); err != nil {
		t.Fatal(err)
	}
}

// newTopology builds the network for n nodes; t's cleanup kills every
// process in the node namespaces (by PID) and removes it all.
func newTopology(t *testing.T, n int) *netTopology {
	t.Helper()
	requireRoot(t)
	lab, err := nslab.NewTopology("bs", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Destroy)
	top := &netTopology{t: t, lab: lab, id: lab.ID, subnet: lab.Subnet}
	for _, nd := range lab.Nodes {
		top.nodes = append(top.nodes, &netNode{ns: nd.NS, addr: nd.Addr})
	}
	return top
}

// killNamespace SIGKILLs every process in a node's namespace, by PID.
func killNamespace(ns string) { nslab.KillNamespace(ns) }

// setLink sets node i's veths' bridge ends up or down: the node's eth0
// and eth1 lose carrier, as when a cable is pulled or a switch port dies.
func (n *netTopology) setLink(i int, up bool) {
	if err := n.lab.SetLink(i, up); err != nil {
		n.t.Fatal(err)
	}
}

// isolate detaches (or reattaches) node i from the bridge: a partition
// with carrier up.
func (n *netTopology) isolate(i int, cut bool) {
	if err := n.lab.Isolate(i, cut); err != nil {
		n.t.Fatal(err)
	}
}

// holders returns the indexes of the nodes whose namespace holds addr.
func (n *netTopology) holders(addr string) []int { return n.lab.Holders(addr) }

// listeners returns the indexes of the nodes with a TCP listener on
// addr:port.
func (n *netTopology) listeners(addr string, port int) []int { return n.lab.Listeners(addr, port) }

// dialFromHost connects to addr:port from the host, through the test
// network.
func dialFromHost(addr string, port int, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), timeout)
}
