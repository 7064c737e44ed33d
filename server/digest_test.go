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
