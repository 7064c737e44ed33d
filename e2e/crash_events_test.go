package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// TestNodeCrashIsReported: a real node crash in the namespace cluster
// produces the critical events; a webhook receiver gets them signed (the
// receiver verifies every signature), in order and without gaps, and
// net-snmp's snmptrapd logs them as v2c and v3 authPriv traps with the
// MIB's names.
func TestNodeCrashIsReported(t *testing.T) {
	if _, err := exec.LookPath("snmptrapd"); err != nil {
		needTool(t, "snmptrapd")
	}
	nc := newNSCluster(t, 3, "lan", 1)
	c := nc.c
	var engine struct {
		EngineID string `json:"engine_id"`
	}
	c.do(t, "GET", "/v1/snmp-engine", nil).must(t, 200).decode(t, &engine)
	td := startTrapd(t, engine.EngineID, "backstop", "auth-pass-1", "priv-pass-1")
	// Default filter: critical events only.
	c.do(t, "POST", "/v1/snmp-targets", map[string]any{"name": "nms-v2c", "host": "127.0.0.1", "port": td.port, "snmp_version": "v2c", "community": "public"}).must(t, 201)
	c.do(t, "POST", "/v1/snmp-targets", map[string]any{"name": "nms-v3", "host": "127.0.0.1", "port": td.port, "snmp_version": "v3",
		"v3": map[string]any{"user": "backstop", "auth_protocol": "SHA-256", "auth_passphrase": "auth-pass-1", "priv_protocol": "AES", "priv_passphrase": "priv-pass-1"}}).must(t, 201)
	hook := newHookReceiver(t, true)
	hook.subscribe(t, c, map[string]any{"name": "ops", "cluster_ids": []string{nc.id}})

	h := nc.createHierarchy("mail", 0, []int{0, 1, 2}, nil)
	nc.placeOn(h, 0)
	nc.crash(0, nil)
	nc.waitPlaced(h, 1, 30*time.Second)

	testkit.Eventually(t, 20*time.Second, "node.down and failover.completed at the webhook", func() bool {
		var down, done bool
		for _, e := range hook.events() {
			down = down || e.Type == "node.down"
			done = done || e.Type == "failover.completed"
		}
		return down && done
	})
	evs := hook.events()
	checkInOrder(t, "webhook", evs, evs[0].Data.Seq)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	for _, want := range []string{"node.down", "failover.started", "failover.completed"} {
		if !strings.Contains(strings.Join(types, " "), want) {
			t.Errorf("webhook events %v lack %s", types, want)
		}
	}
	testkit.Eventually(t, 20*time.Second, "node-down and failover-started traps, v2c and v3", func() bool {
		n := map[string]int{}
		for _, tr := range td.traps() {
			v := "v2c"
			if strings.Contains(tr.Security, "SNMP v3") {
				v = "v3"
			}
			n[v+" "+tr.Vars["SNMPv2-MIB::snmpTrapOID.0"]]++
		}
		return n["v2c OID: BACKSTOP-MIB::backstopNodeDown"] == 1 && n["v3 OID: BACKSTOP-MIB::backstopNodeDown"] == 1 &&
			n["v2c OID: BACKSTOP-MIB::backstopFailoverStarted"] == 1 && n["v3 OID: BACKSTOP-MIB::backstopFailoverStarted"] == 1
	})
	for _, tr := range td.traps() {
		if got := tr.Vars["BACKSTOP-MIB::backstopEventSeverity.0"]; got != "INTEGER: critical(3)" {
			t.Errorf("a trap through the default (critical) filter has severity %q", got)
		}
	}
}
