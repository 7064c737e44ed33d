package kit

import (
	"encoding/binary"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
)

const (
	vip      = "198.18.0.50"
	vipCIDR  = vip + "/24"
	macEth0  = "02:00:5e:00:01:00"
	macEth1  = "02:00:5e:00:01:01"
	macStale = "02:00:5e:00:00:99"
)

// ipTopology builds a node namespace with eth0 and eth1, both veths to a
// bridge in a peer namespace (198.18.0.2/24 on br0): two NICs on one LAN.
func ipTopology(t *testing.T) (node, peer string) {
	t.Helper()
	node, peer = newNetns(t), newNetns(t)
	run(t, "ip", "-n", peer, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", peer, "addr", "add", "198.18.0.2/24", "dev", "br0")
	run(t, "ip", "-n", peer, "link", "set", "br0", "up")
	for i, mac := range []string{macEth0, macEth1} {
		eth, p := "eth"+string(rune('0'+i)), "p"+string(rune('0'+i))
		run(t, "ip", "link", "add", eth, "netns", node, "address", mac, "type", "veth", "peer", "name", p, "netns", peer)
		run(t, "ip", "-n", peer, "link", "set", p, "master", "br0", "up")
		run(t, "ip", "-n", node, "link", "set", eth, "up")
	}
	return node, peer
}

var lladdrRE = regexp.MustCompile(`lladdr ([0-9a-f:]{17})`)

// peerMAC is the MAC the peer's neighbour table has for the VIP.
func peerMAC(t *testing.T, peer string) string {
	t.Helper()
	m := lladdrRE.FindStringSubmatch(run(t, "ip", "-n", peer, "neigh", "show", vip, "dev", "br0"))
	if m == nil {
		return ""
	}
	return m[1]
}

// waitPeerMAC waits for a gratuitous ARP to set the peer's entry to mac.
func waitPeerMAC(t *testing.T, peer, mac, why string) {
	t.Helper()
	var got string
	err := testkit.Poll(t.Context(), 0, "the peer's neighbour entry", func() (bool, error) {
		got = peerMAC(t, peer)
		return got == mac, nil
	})
	if err != nil {
		t.Errorf("%s: peer's neighbour entry for %s is %q, want %s (no gratuitous ARP seen)", why, vip, got, mac)
	}
}

// holders lists the node's interfaces that hold the VIP.
func vipHolders(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	for l := range strings.SplitSeq(run(t, "ip", "-n", node, "-o", "-4", "addr", "show"), "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[3] == vipCIDR {
			out = append(out, f[1])
		}
	}
	return out
}

func ipResource(backups ...string) backstop.Resource {
	p := map[string]any{"address": vipCIDR, "interface": "eth0"}
	if backups != nil {
		l := []any{}
		for _, b := range backups {
			l = append(l, b)
		}
		p["backup_interfaces"] = l
	}
	return backstop.Resource{Name: "vip", Kind: backstop.KindIP, Params: p}
}

func TestIPStartAnnounceStopFence(t *testing.T) {
	needRoot(t, "creates network namespaces")
	needBins(t, "ip")
	t.Parallel()
	node, peer := ipTopology(t)
	// The peer knows the VIP at some old MAC, as after a failover.
	run(t, "ip", "-n", peer, "neigh", "replace", vip, "lladdr", macStale, "dev", "br0", "nud", "stale")
	// Control: adding the address alone announces nothing, so the entry
	// changing below is the kit's gratuitous ARP.
	run(t, "ip", "-n", node, "addr", "add", vipCIDR, "dev", "eth0")
	time.Sleep(300 * time.Millisecond)
	if m := peerMAC(t, peer); m != macStale {
		t.Fatalf("control: the peer's entry changed to %q without an announcement", m)
	}
	run(t, "ip", "-n", node, "addr", "del", vipCIDR, "dev", "eth0")

	res := helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{
		{Op: "check"}, {Op: "start"}, {Op: "check"}, {Op: "deep"}, {Op: "start"}, {Op: "sleep", Arg: "400ms"},
	}})
	expect(t, res, "notrunning", "", "", "", "", "")
	t.Logf("ip Start (address + gratuitous ARP): %.1f ms; again (already there): %.1f ms; quick check %.2f ms",
		res[1].MS, res[4].MS, res[2].MS)
	if h := vipHolders(t, node); len(h) != 1 || h[0] != "eth0" {
		t.Fatalf("after start the VIP is on %v, want [eth0]", h)
	}
	waitPeerMAC(t, peer, macEth0, "after start")

	res = helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{
		{Op: "stop"}, {Op: "check"}, {Op: "stop"},
	}})
	expect(t, res, "", "notrunning", "")
	if h := vipHolders(t, node); len(h) != 0 {
		t.Fatalf("after stop the VIP is on %v", h)
	}

	res = helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{
		{Op: "start"}, {Op: "fence"}, {Op: "check"},
	}})
	expect(t, res, "", "", "notrunning")
	t.Logf("ip Fence: %.2f ms", res[1].MS)
	if h := vipHolders(t, node); len(h) != 0 {
		t.Fatalf("after fence the VIP is on %v", h)
	}
}

func TestIPLocalRecovery(t *testing.T) {
	needRoot(t, "creates network namespaces")
	needBins(t, "ip")
	t.Parallel()
	node, peer := ipTopology(t)
	// A gratuitous ARP updates an entry but creates none (arp_accept=0):
	// the peer must have talked to the VIP before, as clients have.
	run(t, "ip", "-n", peer, "neigh", "replace", vip, "lladdr", macStale, "dev", "br0", "nud", "stale")

	expect(t, helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{{Op: "start"}}}), "")
	waitPeerMAC(t, peer, macEth0, "after start")

	// Cut eth0's cable: the peer's end goes down, eth0 loses carrier.
	run(t, "ip", "-n", peer, "link", "set", "p0", "down")
	res := helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{{Op: "check"}, {Op: "check"}}})
	expect(t, res, "", "")
	t.Logf("ip quick check moving the address to the backup NIC: %.1f ms", res[0].MS)
	if h := vipHolders(t, node); len(h) != 1 || h[0] != "eth1" {
		t.Fatalf("after eth0's link went down the VIP is on %v, want [eth1]", h)
	}
	waitPeerMAC(t, peer, macEth1, "after the move to eth1")

	// Both cables cut: nowhere to go.
	run(t, "ip", "-n", peer, "link", "set", "p1", "down")
	res = helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{{Op: "check"}}})
	expect(t, res, "ip 198.18.0.50/24 on eth0: link of eth1 (holding the address) down and no backup interface up")

	// eth0 back: the check moves the address back there.
	run(t, "ip", "-n", peer, "link", "set", "p0", "up")
	testkit.Eventually(t, 0, "eth0's carrier back", func() bool {
		return strings.Contains(run(t, "ip", "-n", node, "link", "show", "eth0"), "LOWER_UP")
	})
	// br0 lost its carrier with both ports down, which flushed its
	// neighbour entries: seed the client's entry again.
	run(t, "ip", "-n", peer, "neigh", "replace", vip, "lladdr", macStale, "dev", "br0", "nud", "stale")
	expect(t, helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{{Op: "check"}}}), "")
	if h := vipHolders(t, node); len(h) != 1 || h[0] != "eth0" {
		t.Fatalf("after eth0 came back the VIP is on %v, want [eth0]", h)
	}
	waitPeerMAC(t, peer, macEth0, "after the move back to eth0")

	// Without a backup interface a down link is an error, for Start too.
	run(t, "ip", "-n", peer, "link", "set", "p0", "down")
	res = helper(t, inNetns(node), helperSpec{Resource: ipResource(), Ops: []helperOp{{Op: "check"}, {Op: "stop"}, {Op: "start"}}})
	expect(t, res,
		"ip 198.18.0.50/24 on eth0: link down and no backup interface configured",
		"",
		"ip 198.18.0.50/24 on eth0: link down and no backup interface configured")

	// Start with eth0 down but a backup up puts it on the backup.
	run(t, "ip", "-n", peer, "link", "set", "p1", "up")
	testkit.Eventually(t, 0, "eth1's carrier back", func() bool {
		return strings.Contains(run(t, "ip", "-n", node, "link", "show", "eth1"), "LOWER_UP")
	})
	expect(t, helper(t, inNetns(node), helperSpec{Resource: ipResource("eth1"), Ops: []helperOp{{Op: "start"}}}), "")
	if h := vipHolders(t, node); len(h) != 1 || h[0] != "eth1" {
		t.Fatalf("start with eth0 down put the VIP on %v, want [eth1]", h)
	}
	// A missing interface is named.
	r := backstop.Resource{Name: "vip2", Kind: backstop.KindIP, Params: map[string]any{"address": "198.18.0.51/24", "interface": "nope0"}}
	expect(t, helper(t, inNetns(node), helperSpec{Resource: r, Ops: []helperOp{{Op: "start"}}}),
		"ip 198.18.0.51/24 on nope0: no such interface")
}

func TestIPParams(t *testing.T) {
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"interface": "eth0"}, "address: required"},
		{map[string]any{"address": "198.18.0.50", "interface": "eth0"}, "CIDR"},
		{map[string]any{"address": vipCIDR}, "interface: required"},
		{map[string]any{"address": vipCIDR, "interface": "eth0", "backup_interfaces": []any{"eth0"}}, "listed twice"},
		{map[string]any{"address": vipCIDR, "interface": "eth0", "backup_interfaces": "eth1"}, "must be a list"},
	} {
		_, err := New(backstop.Resource{Name: "v", Kind: backstop.KindIP, Params: tc.params}, Env{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v) = %v, want an error containing %q", tc.params, err, tc.want)
		}
	}
	if _, err := New(backstop.Resource{Name: "x", Kind: "floppy"}, Env{}); err == nil || !strings.Contains(err.Error(), `unknown kind "floppy"`) {
		t.Errorf("unknown kind: %v", err)
	}
}

func TestAnnouncementFrames(t *testing.T) {
	mac, _ := net.ParseMAC(macEth0)
	ip := netip.MustParseAddr(vip)
	for _, op := range []uint16{arpRequest, arpReply} {
		f := arpFrame(op, mac, ip)
		if len(f) != 60 || binary.BigEndian.Uint16(f[12:]) != etherTypeARP || binary.BigEndian.Uint16(f[20:]) != op {
			t.Fatalf("arp frame op %d: % x", op, f)
		}
		if !net.IP(f[28:32]).Equal(net.ParseIP(vip)) || !net.IP(f[38:42]).Equal(net.ParseIP(vip)) {
			t.Errorf("arp op %d: sender/target IP not the VIP: % x", op, f)
		}
		if net.HardwareAddr(f[22:28]).String() != macEth0 {
			t.Errorf("arp op %d: sender MAC %s", op, net.HardwareAddr(f[22:28]))
		}
		if op == arpReply && net.HardwareAddr(f[32:38]).String() != macEth0 {
			t.Errorf("gratuitous reply must carry the sender MAC as target MAC (Linux arp_is_garp)")
		}
	}
	ip6 := netip.MustParseAddr("fd00::50")
	f := neighborAdvertFrame(mac, ip6)
	m := f[54:]
	if m[0] != 136 || f[21] != 255 || m[4] != 0x20 {
		t.Fatalf("neighbour advertisement: % x", f)
	}
	var src, dst [16]byte
	copy(src[:], f[22:38])
	copy(dst[:], f[38:54])
	if icmpv6Checksum(src, dst, m) != 0 { // a correct checksum sums to zero
		t.Errorf("ICMPv6 checksum does not verify: % x", m)
	}
}
