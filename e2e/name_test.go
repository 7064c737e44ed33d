//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// nameHierarchy is a virtual IP ← a DNS name (kind name, published by
// RFC 2136 update to the test's BIND, signed with keyFile) ← tcpecho on
// the VIP. address "" publishes each node's own address (so a move shows
// in the answer); otherwise the given one.
func (nc *nsCluster) nameHierarchy(name string, vip int, b *bindServer, fqdn, address, keyFile string, prios []int) string {
	nc.t.Helper()
	addr := nc.top.vip(vip)
	var ps []map[string]any
	for i, n := range prios {
		ps = append(ps, map[string]any{"node_id": nc.nodes[n], "priority": i + 1})
	}
	dnsParams := map[string]any{"name": fqdn, "zone": dnsZone, "server": b.addr, "ttl": 5, "tsig_key_file": keyFile}
	if address != "" {
		dnsParams["address"] = address
	}
	var h struct {
		ID string `json:"id"`
	}
	nc.c.do(nc.t, "POST", "/v1/clusters/"+nc.id+"/hierarchies", map[string]any{
		"name": name,
		"resources": []map[string]any{
			{"name": "vip", "kind": "ip", "params": map[string]any{"address": addr + "/24", "interface": "eth0"}},
			{"name": "dns", "kind": "name", "params": dnsParams, "depends_on": []string{"vip"}},
			{"name": "svc", "kind": "service", "params": map[string]any{
				"start":           fmt.Sprintf(`exec %s --listen %s:7000 --name "$(ip netns identify $$)"`, env.tcpecho, addr),
				"stop_timeout_ms": 2000,
			}, "depends_on": []string{"dns"}},
		},
		"priorities": ps,
	}).must(nc.t, 201).decode(nc.t, &h)
	return h.ID
}

// TestNameFollowsFailover: the name kit against a real BIND. A hierarchy
// publishes web.test.example as the address of the node it runs on; node
// 1 crashes and the name resolves to node 2, the new holder (the test
// logs how long after the crash). A second hierarchy, whose key file
// holds a wrong TSIG secret, fails its bring-up with BIND's reason
// (NOTAUTH, BADSIG) and rolls back: its VIP is removed and the name is
// never published.
func TestNameFollowsFailover(t *testing.T) {
	nc := newNSCluster(t, 3, "lan", 1)
	b := startBind(t, nc.top)
	const web = "web." + dnsZone
	h := nc.nameHierarchy("web", 0, b, web, "", b.keyFile, []int{0, 1, 2})
	inv := nc.watchInvariant(nc.top.vip(0))
	w := b.watch(web)
	defer w.halt()
	nc.placeOn(h, 0)
	if got := b.lookup(web); got != nc.top.nodes[0].addr {
		t.Fatalf("%s resolves to %q once in service on node1, want node1's %s", web, got, nc.top.nodes[0].addr)
	}

	at := time.Now()
	nc.crash(0, inv)
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 10*time.Second, web+" resolving to node2", func() bool { return b.lookup(web) == nc.top.nodes[1].addr })
	resolved, _ := w.firstSince(at, nc.top.nodes[1].addr)
	t.Logf("node1 crash → %s resolves to node2 at the server: %v", web, resolved.Sub(at).Round(time.Millisecond))
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(nc.top.vip(0), 7000) == "hello from "+nc.top.nodes[1].ns })

	t.Run("wrong TSIG key", func(t *testing.T) {
		const bad = "bad." + dnsZone
		vip := nc.top.vip(1)
		hb := nc.nameHierarchy("badkey", 1, b, bad, vip, b.wrongKey(t), []int{2, 1})
		r := nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/"+hb+"/in-service", map[string]any{"node_id": nc.nodes[2]}).must(t, 202)
		op := nc.operation(r.header.Get("Location"), 60*time.Second)
		detail, _ := op["detail"].(string)
		if op["state"] != "failed" || !strings.Contains(detail, "NOTAUTH") || !strings.Contains(detail, "BADSIG") {
			t.Fatalf("in-service with a wrong TSIG key: state %v, detail %q; want failed, with BIND's NOTAUTH/BADSIG", op["state"], detail)
		}
		t.Logf("bring-up refused: %s", detail)
		// A clean rollback: the name (the failed step itself) and the VIP
		// are stopped, both successfully.
		rolledBack := map[string]bool{}
		for _, s := range op["steps"].([]any) {
			s := s.(map[string]any)
			if s["action"] == "rollback_stop" {
				rolledBack[s["resource"].(string)] = s["ok"] == true
			}
		}
		if !rolledBack["vip"] || !rolledBack["dns"] || len(rolledBack) != 2 {
			t.Errorf("rollback steps %v (from %v), want dns and vip stopped successfully", rolledBack, op["steps"])
		}
		if hs := nc.top.holders(vip); len(hs) > 0 {
			t.Errorf("after the rollback the VIP %s is held by nodes %v", vip, hs)
		}
		if got := b.lookup(bad); got != "" {
			t.Errorf("%s resolves to %q after a refused update", bad, got)
		}
		if got := b.lookup(web); got != nc.top.nodes[1].addr {
			t.Errorf("%s changed to %q", web, got)
		}
		if !strings.Contains(b.out.String(), "BADSIG") && !strings.Contains(b.out.String(), "bad signature") && !strings.Contains(b.out.String(), "signature failed") {
			t.Logf("named did not log the refusal in words this test knows")
		}
	})
}
