package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/backstop-ha/backstop"
)

func init() { kinds[backstop.KindIP] = newIP }

// reannounceAfter is the delay of the second gratuitous ARP (or unsolicited
// neighbour advertisement). The first goes out before Start returns; the
// second, sent in the background, covers a peer that dropped the first
// (a switch port still learning, a busy receiver). keepalived and IPaddr2
// send several too.
const reannounceAfter = 250 * time.Millisecond

// ipKit is a virtual IP address: kind "ip".
//
// The address lives on Interface; BackupInterfaces are NICs on the same
// network to which the quick check moves it when the link of the NIC
// holding it goes down (LifeKeeper's "IP local recovery"). All work is done
// with netlink in the network namespace of the agent process, so an agent
// started with `ip netns exec NS` manages NS's interfaces.
type ipKit struct {
	desc    string // "ip 198.18.1.50/24 on eth0", the prefix of every error
	prefix  netip.Prefix
	iface   string
	backups []string
	log     *slog.Logger

	// mu guards the fields below (the background announcement runs
	// alongside the instance's methods).
	mu             sync.Mutex
	cancelAnnounce context.CancelFunc
}

func newIP(r backstop.Resource, env Env) (Instance, error) {
	p := params{r}
	a, err := p.str("address", true)
	if err != nil {
		return nil, err
	}
	prefix, err := netip.ParsePrefix(a)
	if err != nil {
		return nil, p.errorf("address", "must be an address with a prefix length (CIDR), e.g. 198.18.1.50/24: %v", err)
	}
	if prefix.Addr().Zone() != "" {
		return nil, p.errorf("address", "must not carry a zone")
	}
	iface, err := p.str("interface", true)
	if err != nil {
		return nil, err
	}
	backups, err := p.strList("backup_interfaces")
	if err != nil {
		return nil, err
	}
	for i, b := range backups {
		if b == iface || slices.Contains(backups[:i], b) {
			return nil, p.errorf("backup_interfaces", "interface %q is listed twice (with interface or another backup)", b)
		}
	}
	return &ipKit{
		desc:    fmt.Sprintf("ip %s on %s", prefix, iface),
		prefix:  prefix,
		iface:   iface,
		backups: backups,
		log:     logger(env),
	}, nil
}

// family is the netlink address family of the address.
func (k *ipKit) family() int {
	if k.prefix.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// nlAddr is the address as netlink wants it, for adding it to linkIndex.
func (k *ipKit) nlAddr() *netlink.Addr {
	ip := net.IP(k.prefix.Addr().AsSlice())
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(k.prefix.Bits(), k.prefix.Addr().BitLen())}}
	if k.prefix.Addr().Is6() {
		// Without NODAD an IPv6 address is "tentative" for a second or
		// so (duplicate address detection) and cannot be used or
		// announced; keepalived adds virtual IPv6 addresses this way too.
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// holders returns every address entry equal to ours, on any interface
// (normally zero or one).
func (k *ipKit) holders() ([]netlink.Addr, error) {
	var (
		list []netlink.Addr
		err  error
	)
	for range 3 { // a dump interrupted by a concurrent change may be partial: retry
		list, err = netlink.AddrList(nil, k.family())
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: list addresses: %w", k.desc, err)
	}
	var out []netlink.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == k.prefix.Addr() {
			out = append(out, a)
		}
	}
	return out, nil
}

// linkUp tells whether l is administratively up and has carrier
// (IFF_RUNNING: for a veth, its peer is up too; for a NIC, the cable is
// in). An address on an up link without carrier is unreachable.
func linkUp(l netlink.Link) bool {
	a := l.Attrs()
	return a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_RUNNING != 0
}

// candidates returns the links of interface and backup_interfaces that
// exist, in that order, and the names of those that do not.
func (k *ipKit) candidates() (links []netlink.Link, missing []string, err error) {
	for _, name := range append([]string{k.iface}, k.backups...) {
		l, err := netlink.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
				missing = append(missing, name)
				continue
			}
			return nil, nil, fmt.Errorf("%s: look up interface %s: %w", k.desc, name, err)
		}
		links = append(links, l)
	}
	return links, missing, nil
}

// pickUp returns the first candidate link that is up, skipping the one
// with index skip; nil when there is none.
func pickUp(links []netlink.Link, skip int) netlink.Link {
	for _, l := range links {
		if l.Attrs().Index != skip && linkUp(l) {
			return l
		}
	}
	return nil
}

// noneUpError explains why no interface can take the address.
func (k *ipKit) noneUpError(what string, missing []string) error {
	msg := k.desc + ": " + what
	switch {
	case len(k.backups) > 0:
		msg += " and no backup interface up"
		if len(missing) > 0 {
			msg += fmt.Sprintf(" (missing: %s)", strings.Join(missing, ", "))
		}
	case !slices.Contains(missing, k.iface):
		msg += " and no backup interface configured"
	}
	return errors.New(msg)
}

// Start adds the address to the interface (or, if its link is down, to
// the first backup interface whose link is up) and announces it with a
// gratuitous ARP (IPv4) or an unsolicited neighbour advertisement (IPv6).
// An address already present is announced again, and moved if its link is
// down.
func (k *ipKit) Start(ctx context.Context) error {
	held, err := k.holders()
	if err != nil {
		return err
	}
	if len(held) > 0 {
		return k.keepUp(ctx, held[0], true)
	}
	links, missing, err := k.candidates()
	if err != nil {
		return err
	}
	target := pickUp(links, 0)
	if target == nil {
		what := "link down"
		if slices.Contains(missing, k.iface) {
			what = "no such interface"
		}
		return k.noneUpError(what, missing)
	}
	if err := netlink.AddrAdd(target, k.nlAddr()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s: add address to %s: %w", k.desc, target.Attrs().Name, err)
	}
	if name := target.Attrs().Name; name != k.iface {
		k.log.WarnContext(ctx, "ip: interface link down, address added to backup interface",
			"address", k.prefix.String(), "interface", k.iface, "backup", name)
	} else {
		k.log.InfoContext(ctx, "ip: address added", "address", k.prefix.String(), "interface", name)
	}
	k.announce(ctx, target)
	return nil
}

// keepUp is the shared part of Start and Check for an address that is
// present: nothing to do while its link is up (Start announces it again);
// otherwise move it to an interface whose link is up.
func (k *ipKit) keepUp(ctx context.Context, held netlink.Addr, announce bool) error {
	holder, err := netlink.LinkByIndex(held.LinkIndex)
	if err != nil {
		return fmt.Errorf("%s: look up interface #%d holding the address: %w", k.desc, held.LinkIndex, err)
	}
	if linkUp(holder) {
		if announce {
			k.announce(ctx, holder)
		}
		return nil
	}
	from := holder.Attrs().Name
	links, missing, err := k.candidates()
	if err != nil {
		return err
	}
	target := pickUp(links, holder.Attrs().Index)
	if target == nil {
		what := "link down"
		if from != k.iface {
			what = "link of " + from + " (holding the address) down"
		}
		return k.noneUpError(what, missing)
	}
	to := target.Attrs().Name
	// Add first, then delete: the address is never absent from the node,
	// and a failed add leaves it where it was.
	if err := netlink.AddrAdd(target, k.nlAddr()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s: link of %s down; moving the address to %s failed: %w", k.desc, from, to, err)
	}
	if err := netlink.AddrDel(holder, &held); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
		// Both hold it now; the down one cannot answer, so the address
		// works, but say so.
		k.log.WarnContext(ctx, "ip local recovery: could not delete the address from the down interface",
			"address", k.prefix.String(), "from", from, "error", err)
	}
	k.log.WarnContext(ctx, "ip local recovery: link down, address moved to backup interface",
		"address", k.prefix.String(), "from", from, "to", to)
	k.announce(ctx, target)
	return nil
}

// Stop deletes the address from whichever interface holds it.
func (k *ipKit) Stop(ctx context.Context) error {
	if err := k.removeAll(); err != nil {
		return err
	}
	k.log.InfoContext(ctx, "ip: address removed", "address", k.prefix.String())
	return nil
}

// Fence deletes the address at once; it costs two netlink round trips,
// well under a millisecond.
func (k *ipKit) Fence() error {
	return k.removeAll()
}

func (k *ipKit) removeAll() error {
	k.stopAnnouncing()
	held, err := k.holders()
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range held {
		if err := netlink.AddrDel(nil, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("%s: delete address from interface #%d: %w", k.desc, a.LinkIndex, err))
		}
	}
	return errors.Join(errs...)
}

// Check reports whether the address is present on a link that is up. When
// the link holding it is down, it performs IP local recovery: it moves the
// address to the interface or a backup interface whose link is up,
// announces it, logs the move and returns nil; it returns an error when no
// such interface exists or the move fails. It returns ErrNotRunning when
// no interface holds the address.
//
// The deep check is the quick check. The brief's "reachable" test is left
// out on purpose: the address is local, so reaching it from this node
// only exercises the loopback path, and reaching some other host says
// more about that host than about the address. Whether clients reach the
// service through the address is what the tcp, http and smtp probes of
// the hierarchy, aimed at the virtual IP, test.
func (k *ipKit) Check(ctx context.Context, deep bool) error {
	held, err := k.holders()
	if err != nil {
		return err
	}
	if len(held) == 0 {
		return fmt.Errorf("%s: address not present: %w", k.desc, ErrNotRunning)
	}
	return k.keepUp(ctx, held[0], false)
}

// announce sends a gratuitous ARP (or unsolicited neighbour advertisement)
// for the address from l now, and once more after reannounceAfter in the
// background if the address is still on l. Failures are logged, not
// returned: the address works without them, peers just take longer (up to
// about 9 s with Linux's default neighbour timers) to learn its new MAC.
func (k *ipKit) announce(ctx context.Context, l netlink.Link) {
	a := l.Attrs()
	if len(a.HardwareAddr) != 6 {
		k.log.InfoContext(ctx, "ip: interface has no Ethernet address, nothing to announce", "interface", a.Name)
		return
	}
	ifindex, name, mac, ip := a.Index, a.Name, slices.Clone(a.HardwareAddr), k.prefix.Addr()
	if err := sendAnnouncement(ifindex, mac, ip); err != nil {
		k.log.WarnContext(ctx, "ip: gratuitous ARP failed", "interface", name, "address", ip.String(), "error", err)
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k.mu.Lock()
	if k.cancelAnnounce != nil {
		k.cancelAnnounce()
	}
	k.cancelAnnounce = cancel
	k.mu.Unlock()
	go func() {
		defer cancel()
		t := time.NewTimer(reannounceAfter)
		defer t.Stop()
		select {
		case <-actx.Done():
			return
		case <-t.C:
		}
		held, err := k.holders()
		if err != nil || !slices.ContainsFunc(held, func(h netlink.Addr) bool { return h.LinkIndex == ifindex }) {
			return // moved or removed meanwhile
		}
		if err := sendAnnouncement(ifindex, mac, ip); err != nil {
			k.log.WarnContext(actx, "ip: gratuitous ARP failed", "interface", name, "address", ip.String(), "error", err)
		}
	}()
}

func (k *ipKit) stopAnnouncing() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cancelAnnounce != nil {
		k.cancelAnnounce()
		k.cancelAnnounce = nil
	}
}

// MoveTo moves the address to the named interface (the move_ip command),
// adding it there before deleting it elsewhere so it is never absent, and
// announces it. Moving to the interface that already holds it succeeds.
func (k *ipKit) MoveTo(ctx context.Context, iface string) error {
	target, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("%s: move to %s: %w", k.desc, iface, err)
	}
	if !linkUp(target) {
		return fmt.Errorf("%s: move to %s: its link is down", k.desc, iface)
	}
	held, err := k.holders()
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(target, k.nlAddr()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s: add address to %s: %w", k.desc, iface, err)
	}
	for _, a := range held {
		if a.LinkIndex == target.Attrs().Index {
			continue
		}
		if err := netlink.AddrDel(nil, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("%s: delete address from interface #%d after the move: %w", k.desc, a.LinkIndex, err)
		}
	}
	k.log.InfoContext(ctx, "ip: address moved on command", "address", k.prefix.String(), "to", iface)
	k.announce(ctx, target)
	return nil
}
