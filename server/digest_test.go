package server_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/api"
	"github.com/backstop-ha/backstop/server"
)

// TestReportDigest: the digest that lets a heartbeat skip storing its
// report (store.RenewLease) ignores telemetry and changes with anything
// the failure detector, the engine or the report's events read. A change
// it missed would leave a path down unseen by JudgeNodes (a node declared
// down on stale evidence, or not at all) or lose an event, so every such
// field is flipped here once.
func TestReportDigest(t *testing.T) {
	hid, pid, peer := uuid.New(), uuid.New(), uuid.New()
	at := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	base := func() *api.Heartbeat {
		rtt, loss := float32(0.3), float32(0)
		restarts, failures := 0, int64(0)
		return &api.Heartbeat{ConfigVersion: 3,
			Hierarchies: &[]api.HierarchyReport{{HierarchyId: hid, Epoch: 4, State: api.PlacementStateInService}},
			Resources: &[]api.ResourceHealth{{HierarchyId: hid, Resource: "svc", Restarts: &restarts, CheckFailures: &failures,
				Quick: &api.CheckResult{Ok: true, At: at}, Deep: &api.CheckResult{Ok: true, At: at}}},
			Paths: &[]api.PathReport{{PathId: pid, PeerNodeId: peer, State: api.PathReportStateUp, RttMs: &rtt, Loss: &loss}},
		}
	}
	d0 := server.ReportDigest(base())
	same := map[string]func(*api.Heartbeat){
		"rtt":            func(h *api.Heartbeat) { v := float32(0.9); (*h.Paths)[0].RttMs = &v },
		"loss":           func(h *api.Heartbeat) { v := float32(0.1); (*h.Paths)[0].Loss = &v },
		"quick time":     func(h *api.Heartbeat) { (*h.Resources)[0].Quick.At = at.Add(time.Second) },
		"deep time":      func(h *api.Heartbeat) { (*h.Resources)[0].Deep.At = at.Add(time.Second) },
		"config version": func(h *api.Heartbeat) { h.ConfigVersion++ },
	}
	for name, f := range same {
		h := base()
		f(h)
		if !bytes.Equal(server.ReportDigest(h), d0) {
			t.Errorf("%s changed the digest; it is telemetry", name)
		}
	}
	differ := map[string]func(*api.Heartbeat){
		"path state":      func(h *api.Heartbeat) { (*h.Paths)[0].State = api.PathReportStateDown },
		"path gone":       func(h *api.Heartbeat) { *h.Paths = nil },
		"path peer":       func(h *api.Heartbeat) { (*h.Paths)[0].PeerNodeId = uuid.New() },
		"quick fails":     func(h *api.Heartbeat) { (*h.Resources)[0].Quick.Ok = false },
		"deep fails":      func(h *api.Heartbeat) { (*h.Resources)[0].Deep.Ok = false },
		"no deep result":  func(h *api.Heartbeat) { (*h.Resources)[0].Deep = nil },
		"restarted":       func(h *api.Heartbeat) { v := 1; (*h.Resources)[0].Restarts = &v },
		"resource gone":   func(h *api.Heartbeat) { *h.Resources = nil },
		"epoch":           func(h *api.Heartbeat) { (*h.Hierarchies)[0].Epoch++ },
		"hierarchy state": func(h *api.Heartbeat) { (*h.Hierarchies)[0].State = api.PlacementStateStopping },
		"hierarchy detail": func(h *api.Heartbeat) {
			d := "x"
			(*h.Hierarchies)[0].Detail = &d
		},
	}
	for name, f := range differ {
		h := base()
		f(h)
		if bytes.Equal(server.ReportDigest(h), d0) {
			t.Errorf("%s left the digest unchanged", name)
		}
	}
}

// TestTelemetryDigest: a steady node's report is stored again once per
// TelemetryEvery (so the RTTs and check times operators read are at most
// that old), and not more often; nodes are spread over the period.
func TestTelemetryDigest(t *testing.T) {
	d := []byte("digest")
	t0 := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	node := uuid.NewString()
	changes := 0
	prev := server.TelemetryDigest(d, node, t0)
	for ms := int64(100); ms <= 20000; ms += 100 {
		cur := server.TelemetryDigest(d, node, t0.Add(time.Duration(ms)*time.Millisecond))
		if !bytes.Equal(cur, prev) {
			changes++
		}
		prev = cur
	}
	if want := int(20 * time.Second / server.TelemetryEvery); changes != want {
		t.Fatalf("the digest changed %d times in 20 s, want %d (once per %v)", changes, want, server.TelemetryEvery)
	}
	if !bytes.HasPrefix(prev, d) {
		t.Fatalf("the report digest is not kept: %x", prev)
	}
	// Ten nodes do not all change at the same instant.
	at := map[int64]bool{}
	for range 10 {
		n := uuid.NewString()
		p := server.TelemetryDigest(d, n, t0)
		for ms := int64(10); ; ms += 10 {
			if !bytes.Equal(server.TelemetryDigest(d, n, t0.Add(time.Duration(ms)*time.Millisecond)), p) {
				at[ms] = true
				break
			}
		}
	}
	if len(at) < 2 {
		t.Fatalf("ten nodes store their telemetry at the same instant: %v", at)
	}
}
