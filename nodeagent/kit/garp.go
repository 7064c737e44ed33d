package kit

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Address announcements, written straight to the interface with an
// AF_PACKET socket: no arping binary, no dependency, and the socket lives
// in the network namespace of the process like the rest of the kit.

var (
	ethBroadcast   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ethAllNodesV6  = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1} // ff02::1
	ipv6AllNodes   = netip.MustParseAddr("ff02::1")
	ethMinFrameLen = 60 // without the FCS; shorter frames are padded
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	arpRequest    = 1
	arpReply      = 2
)

// sendAnnouncement tells the link that ip is now at mac: for IPv4 a
// gratuitous ARP request and a gratuitous ARP reply (peers accept either;
// sending both covers stacks that honour only one), for IPv6 an unsolicited
// neighbour advertisement with the override flag to all nodes.
func sendAnnouncement(ifindex int, mac net.HardwareAddr, ip netip.Addr) error {
	var frames [][]byte
	var dst net.HardwareAddr
	var proto uint16
	ip = ip.Unmap()
	if ip.Is4() {
		frames = [][]byte{arpFrame(arpRequest, mac, ip), arpFrame(arpReply, mac, ip)}
		dst, proto = ethBroadcast, etherTypeARP
	} else {
		frames = [][]byte{neighborAdvertFrame(mac, ip)}
		dst, proto = ethAllNodesV6, etherTypeIPv6
	}
	// Protocol 0: a send-only socket, which never receives a packet.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	// Closing a packet socket waits for an RCU grace period
	// (packet_release calls synchronize_net), measured at 6-20 ms here:
	// close it in the background, not on the failover path.
	defer func() { go unix.Close(fd) }()
	sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(proto), Halen: 6}
	copy(sa.Addr[:], dst)
	for _, f := range frames {
		if err := unix.Sendto(fd, f, 0, sa); err != nil {
			return fmt.Errorf("send on interface #%d: %w", ifindex, err)
		}
	}
	return nil
}

// htons converts v to network byte order, as struct sockaddr_ll wants.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// arpFrame builds a gratuitous ARP Ethernet frame: sender and target
// protocol address are both ip. For a reply, the target hardware address
// is the sender's own: Linux takes a reply as gratuitous, and overrides a
// recently updated neighbour entry with it, only then (arp_is_garp).
func arpFrame(op uint16, mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, ethMinFrameLen)
	copy(f[0:6], ethBroadcast)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // protocol: IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], mac)
	ip4 := ip.As4()
	copy(a[14:18], ip4[:])
	if op == arpReply {
		copy(a[18:24], mac)
	} // a request's target hardware address stays zero, as arping -U sends it
	copy(a[24:28], ip4[:])
	return f
}

// neighborAdvertFrame builds an unsolicited ICMPv6 neighbour advertisement
// (RFC 4861 section 7.2.6) from ip to all nodes, override flag set, with
// the target link-layer address option.
func neighborAdvertFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	const icmpLen = 24 + 8 // header, flags, target; one option
	f := make([]byte, 14+40+icmpLen)
	copy(f[0:6], ethAllNodesV6)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
	h := f[14:54]
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:6], icmpLen)
	h[6] = 58  // next header: ICMPv6
	h[7] = 255 // hop limit: receivers drop ND messages with any other
	src, dst := ip.As16(), ipv6AllNodes.As16()
	copy(h[8:24], src[:])
	copy(h[24:40], dst[:])
	m := f[54:]
	m[0] = 136                                     // neighbour advertisement
	binary.BigEndian.PutUint32(m[4:8], 0x20000000) // override
	copy(m[8:24], src[:])                          // target address
	m[24], m[25] = 2, 1                            // target link-layer address, 8 bytes
	copy(m[26:32], mac)
	binary.BigEndian.PutUint16(m[2:4], icmpv6Checksum(src, dst, m))
	return f
}

// icmpv6Checksum is the Internet checksum of msg with the IPv6
// pseudo-header (RFC 8200 section 8.1); msg's checksum field must be zero.
func icmpv6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var tail [8]byte
	binary.BigEndian.PutUint32(tail[0:4], uint32(len(msg)))
	tail[7] = 58
	add(tail[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
