//go:build linux

package e2e

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// TestMailService is the mail-service proof: Postfix (Debian's, one shared
// configuration directory, its queue and mailboxes on a volume) protected
// by an ip ← volume ← service ← smtp hierarchy on a 3-node lan cluster. A
// client on the host sends mail to the virtual IP continuously and retries
// each message until it is accepted (250 after DATA). Faults in sequence:
// node 1 (active) crashes → node 2; node 2 loses its network → node 3;
// node 1 reboots and node 2's link returns, then an operator switches the
// hierarchy over back to node 1. After each fault the test measures the
// outage the client saw; at the end every accepted message must be in the
// mailbox (duplicates are counted: delivery is at-least-once), and no two
// nodes ever held the VIP or listened on its port 25 at once.
func TestMailService(t *testing.T) {
	m := newMailDir(t) // first, so that it is removed after the nodes are gone
	nc := newNSCluster(t, 3, "lan", 1)
	vip := nc.top.vip(0)
	m.configure(t, vip, nc.top.subnet)
	h := nc.createMailHierarchy("mail", m, []int{0, 1, 2})
	inv := nc.watchInvariantPort(vip, 25)
	defer func() {
		if t.Failed() {
			t.Logf("mail logs:\n%s", m.logs(nc))
		}
	}()
	nc.placeOn(h, 0)
	testkit.Eventually(t, 0, "an SMTP greeting on the VIP", func() bool {
		return strings.HasPrefix(greeting(vip, 25), "220 ")
	})

	client := startMailClient(net.JoinHostPort(vip, "25"), m.rcpt)
	defer client.halt()
	testkit.Eventually(t, 0, "the first message accepted", func() bool { return len(client.acceptedSince(time.Time{})) > 0 })
	time.Sleep(2 * time.Second)

	type outage struct {
		fault  string
		placed time.Duration // fault → the control plane shows the hierarchy in service on the new node
		outage time.Duration // the longest time without an accepted message, from the fault on
		first  time.Duration // fault → the message that ended the outage
		failed int           // failed attempts meanwhile
	}
	var outages []outage
	// measure waits until the hierarchy is in service on node to, then for
	// a message accepted after that, and records the longest stretch from
	// the fault (at) to that message without any message accepted.
	measure := func(fault string, at time.Time, to int) {
		t.Helper()
		nc.waitPlaced(h, to, 30*time.Second)
		placedAt := time.Now()
		testkit.Eventually(t, 15*time.Second, fmt.Sprintf("a message accepted on node%d after %s (last error: %s)", to+1, fault, client.lastError()),
			func() bool { return len(client.acceptedSince(placedAt)) > 0 })
		end := client.acceptedSince(placedAt)[0]
		o := outage{fault: fault, placed: placedAt.Sub(at), failed: client.failuresBetween(at, end)}
		// The longest stretch without an accepted message, from the fault
		// to the first message accepted once the new node is in service.
		prev, back := at, end
		acc := client.acceptedSince(at)
		for _, a := range acc {
			if a.After(end) {
				break
			}
			if gap := a.Sub(prev); gap > o.outage {
				o.outage, back = gap, a
			}
			prev = a
		}
		o.first = back.Sub(at)
		var before []string // accepted after the fault, before the outage began
		for _, a := range acc {
			if !a.Before(back.Add(-o.outage)) {
				break
			}
			before = append(before, "+"+a.Sub(at).Round(time.Millisecond).String())
		}
		t.Logf("%s: mail outage %v, until +%v after the fault (%d failed attempts retried); in service on node%d +%v after the fault (as polled from the API)",
			fault, o.outage.Round(time.Millisecond), o.first.Round(time.Millisecond), o.failed, to+1, o.placed.Round(time.Millisecond))
		if len(before) > 0 {
			t.Logf("%s: %d messages accepted after the fault, before the outage began: %v", fault, len(before), before[:min(len(before), 8)])
		}
		outages = append(outages, o)
		time.Sleep(2 * time.Second) // mail flows on the new node for a while
	}

	// 1. Node 1, the active node, crashes (agent, Postfix and every other
	// process of it SIGKILLed, links down).
	at := time.Now()
	nc.crash(0, inv)
	measure("node1 crash", at, 1)

	// 2. Node 2, now active, loses its network (both veths down): it
	// fences itself (SIGKILL of Postfix, unmount, VIP removed) before the
	// control plane declares it down and brings the hierarchy up on node 3.
	at = time.Now()
	nc.top.setLink(1, false)
	measure("node2 network loss", at, 2)
	if slices.Contains(nc.top.holders(vip), 1) || slices.Contains(nc.top.listeners(vip, 25), 1) {
		t.Errorf("node2 still holds the VIP or runs Postfix while cut off")
	}

	// Node 1 reboots (empty; its agent restarts with its data directory
	// and must not resume its old placement) and node 2's link returns
	// (it fenced itself while cut off).
	nc.reboot(0, inv)
	nc.top.setLink(1, true)
	nc.waitNodeState(0, "up", 30*time.Second)
	nc.waitNodeState(1, "up", 30*time.Second)
	time.Sleep(time.Second)
	if got := nc.top.holders(vip); !slices.Equal(got, []int{2}) {
		t.Errorf("before the switchover the VIP is held by nodes %v (indexes from 0), want only node3", got)
	}

	// 3. An operator switches the hierarchy over to node 1, the primary.
	at = time.Now()
	r := nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/"+h+"/switchover", map[string]any{"node_id": nc.nodes[0]}).must(t, 202)
	if op := nc.operation(r.header.Get("Location"), 60*time.Second); op["state"] != "succeeded" {
		t.Fatalf("switchover to node1: %v", op)
	}
	measure("switchover node3 → node1", at, 0)

	// The client stops; the queue drains into the mailbox.
	client.halt()
	accepted := client.acceptedIDs()
	var box map[string]int
	var queued, incomplete []string
	drained := func() bool {
		var err error
		if box, err = m.mailbox(); err != nil {
			t.Logf("mailbox: %v", err)
			return false
		}
		queued, incomplete = m.queued()
		for _, id := range accepted {
			if box[id] == 0 {
				return false
			}
		}
		return len(queued) == 0
	}
	for end := time.Now().Add(30 * time.Second); !drained() && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
	}
	if len(queued) > 0 {
		t.Errorf("Postfix's queue did not drain in 30 s: %d messages left: %v\n%s", len(queued), queued[:min(len(queued), 10)],
			strings.Join(m.maillogLines("warning", "fatal", "error", "panic", "status=deferred", "status=bounced"), "\n"))
	}
	if len(incomplete) > 0 {
		// A receiving process killed by a fault: the message was never
		// acknowledged, the client sent it again.
		t.Logf("%d incomplete queue files left by killed Postfix processes (ignored by Postfix; never acknowledged): %v",
			len(incomplete), incomplete[:min(len(incomplete), 10)])
	}
	acceptedSet := map[string]bool{}
	for _, id := range accepted {
		acceptedSet[id] = true
	}
	var lost []string
	dups, extra, copies := 0, 0, 0
	for _, id := range accepted {
		if box[id] == 0 {
			lost = append(lost, id)
		}
	}
	for id, n := range box {
		copies += n
		if n > 1 {
			dups += n - 1
		}
		if !acceptedSet[id] {
			extra++
		}
	}
	t.Logf("client: %d messages accepted in %d attempts; mailbox: %d copies of %d messages: %d lost, %d duplicate copies, %d delivered but never acknowledged to the client",
		len(accepted), client.attempts.Load(), copies, len(box), len(lost), dups, extra)
	if len(lost) > 0 {
		t.Errorf("%d accepted messages are not in the mailbox (lost), e.g. %v; the maillog about them:\n%s", len(lost), lost[:min(len(lost), 5)],
			strings.Join(m.maillogLines(lost[:min(len(lost), 5)]...), "\n"))
	}
	for _, o := range outages {
		if o.outage > 10*time.Second {
			t.Errorf("%s: mail outage %v, more than 10 s", o.fault, o.outage)
		}
	}
	if p := nc.placement(h); p.NodeID != nc.nodes[0] || p.State != "in_service" {
		t.Errorf("final placement %+v, want in service on node1", p)
	}
	nc.hasEvents("node.down", "failover.started", "failover.completed", "node.down", "failover.completed", "switchover.completed")
	for _, in := range nc.incidents() {
		t.Logf("incident %v: %v, recovery %v ms", in["kind"], in["state"], in["recovery_ms"])
	}
	inv.check(t)
}
