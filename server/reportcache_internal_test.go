package server

import "testing"

// TestReportCache: a node's report is decoded once while its stored
// bytes stay the same, and any change to them, telemetry included, is
// decoded anew: operators never see an older report than the stored one.
func TestReportCache(t *testing.T) {
	var c reportCache
	r1 := []byte(`{"paths": [{"path_id": "0195f7a4-2222-7000-8000-000000000001", "peer_node_id": "0195f7a4-2222-7000-8000-000000000002", "state": "up", "rtt_ms": 0.3}]}`)
	a := c.decode("n1", r1)
	if a == nil || len(a.Paths) != 1 || a.Paths[0].State != "up" {
		t.Fatalf("decoded %+v", a)
	}
	if b := c.decode("n1", append([]byte(nil), r1...)); b != a {
		t.Fatal("the same stored report was decoded again")
	}
	r2 := []byte(`{"paths": [{"path_id": "0195f7a4-2222-7000-8000-000000000001", "peer_node_id": "0195f7a4-2222-7000-8000-000000000002", "state": "up", "rtt_ms": 0.4}]}`)
	b := c.decode("n1", r2)
	if b == a || b.Paths[0].RttMs == nil || *b.Paths[0].RttMs != 0.4 {
		t.Fatalf("a changed report served from the cache: %+v", b)
	}
	if c.decode("n2", r1) == b || c.decode("n1", nil) != nil {
		t.Fatal("reports of different nodes mixed up, or an empty one decoded")
	}
}
