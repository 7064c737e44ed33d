package server_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readCluster is what agentload's operators read: a 64-node cluster of
// enrolled agents whose stored reports are what agentload's agents send
// (every hierarchy's state, the in-service resources' health, both
// directions of a ring of paths), 4 hierarchies in service on their
// first node, and the cluster's event log of getting there.
type readCluster struct {
	e   *env
	cid string
	// paths are the reads of agentload's --api-rate, in its order.
	paths []readPath
}

type readPath struct{ kind, path string }

func newReadCluster(b *testing.B, size, hierarchies int) *readCluster {
	b.Helper()
	e := newEnv(b, 1)
	cid := e.addCluster("load-1", "lan")
	nodes := make([]string, size)
	creds := make([]string, size)
	for i := range size {
		id, token := e.addNode(cid, fmt.Sprintf("n%03d", i+1))
		nodes[i], creds[i] = id, e.enroll(token).Credential
	}
	type pathRep struct{ id, peer string }
	pathsOf := map[string][]pathRep{}
	for i := range size {
		j := (i + 1) % size
		resp, body := e.do("POST", "/v1/clusters/"+cid+"/paths", map[string]any{
			"a": map[string]any{"node_id": nodes[i], "address": fmt.Sprintf("198.18.0.%d", i+1)},
			"b": map[string]any{"node_id": nodes[j], "address": fmt.Sprintf("198.18.0.%d", j+1)},
		})
		if resp.StatusCode != 201 {
			b.Fatalf("path: %d %s", resp.StatusCode, body)
		}
		var p struct {
			Forward, Reverse struct {
				ID string `json:"id"`
			}
		}
		_ = json.Unmarshal(body, &p)
		pathsOf[nodes[i]] = append(pathsOf[nodes[i]], pathRep{p.Forward.ID, nodes[j]})
		pathsOf[nodes[j]] = append(pathsOf[nodes[j]], pathRep{p.Reverse.ID, nodes[i]})
	}
	hiers := make([]string, hierarchies)
	inService := map[string]string{} // node → hierarchy
	for k := range hierarchies {
		resp, body := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", map[string]any{
			"name":       fmt.Sprintf("h%d", k+1),
			"resources":  []map[string]any{{"name": "probe", "kind": "tcp", "params": map[string]any{"host": "198.18.0.1", "port": 7000}}},
			"priorities": []map[string]any{{"node_id": nodes[2*k], "priority": 1}, {"node_id": nodes[2*k+1], "priority": 2}},
		})
		if resp.StatusCode != 201 {
			b.Fatalf("hierarchy: %d %s", resp.StatusCode, body)
		}
		var h struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &h)
		hiers[k] = h.ID
		// In service on its first node, the agent's way: poll, succeed.
		if resp, body := e.do("POST", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/in-service", map[string]any{"node_id": nodes[2*k]}); resp.StatusCode != 202 {
			b.Fatalf("in-service: %d %s", resp.StatusCode, body)
		}
		_, body = e.agentDo(creds[2*k], "GET", "/agent/v1/commands?wait=0", nil)
		var polled struct {
			Commands []struct {
				CommandID string `json:"command_id"`
			} `json:"commands"`
		}
		_ = json.Unmarshal(body, &polled)
		if len(polled.Commands) != 1 {
			b.Fatalf("poll: %s", body)
		}
		if resp, body := e.agentDo(creds[2*k], "POST", "/agent/v1/commands/"+polled.Commands[0].CommandID+"/result", map[string]any{
			"status": "succeeded", "steps": []map[string]any{{"resource": "probe", "action": "start", "ok": true, "duration_ms": 3}},
		}); resp.StatusCode != 204 {
			b.Fatalf("result: %d %s", resp.StatusCode, body)
		}
		inService[nodes[2*k]] = h.ID
	}
	_, body := e.agentDo(creds[0], "GET", "/agent/v1/config", nil)
	var conf struct {
		Version int64 `json:"version"`
	}
	_ = json.Unmarshal(body, &conf)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for i, n := range nodes {
		hr := []map[string]any{}
		res := []map[string]any{}
		for _, h := range hiers {
			st, epoch := "out_of_service", 0
			if inService[n] == h {
				st, epoch = "in_service", 1
				res = append(res, map[string]any{"hierarchy_id": h, "resource": "probe", "check_failures": 0, "restarts": 0,
					"quick": map[string]any{"ok": true, "at": now}, "deep": map[string]any{"ok": true, "at": now}})
			}
			hr = append(hr, map[string]any{"hierarchy_id": h, "epoch": epoch, "state": st})
		}
		pr := []map[string]any{}
		for _, p := range pathsOf[n] {
			pr = append(pr, map[string]any{"path_id": p.id, "peer_node_id": p.peer, "state": "up", "loss": 0, "rtt_ms": 0.2 + float64(i%7)/20})
		}
		hb := map[string]any{"config_version": conf.Version, "instance": fmt.Sprintf("bench%04d", i), "hierarchies": hr, "resources": res, "paths": pr}
		if resp, body := e.agentDo(creds[i], "POST", "/agent/v1/heartbeat", hb); resp.StatusCode != 200 {
			b.Fatalf("heartbeat: %d %s", resp.StatusCode, body)
		}
	}
	// agentload's 1,000 agents are 16 such clusters: the cluster list
	// shows them all.
	for i := range 15 {
		e.addCluster(fmt.Sprintf("load-%d", i+2), "lan")
	}
	// An operator's switchovers (one a second in agentload) leave many
	// events; maintenance toggles are the cheapest to make.
	maintenance(e, cid, nodes[size-1], 40)
	// agentload reads the latest page: 100 events back from the newest.
	_, body = e.do("GET", "/v1/clusters/"+cid+"/events?limit=1000", nil)
	var page struct {
		Items []struct {
			Seq int64 `json:"seq"`
		} `json:"items"`
	}
	_ = json.Unmarshal(body, &page)
	if len(page.Items) < 100 {
		b.Fatalf("only %d events", len(page.Items))
	}
	seq := page.Items[len(page.Items)-1].Seq
	return &readCluster{e: e, cid: cid, paths: []readPath{
		{"clusters", "/v1/clusters"},
		{"cluster", "/v1/clusters/" + cid},
		{"nodes", "/v1/clusters/" + cid + "/nodes"},
		{"hierarchies", "/v1/clusters/" + cid + "/hierarchies"},
		{"events", fmt.Sprintf("/v1/clusters/%s/events?after=%d&limit=100", cid, max(0, seq-100))},
	}}
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReads: each GET of agentload's --api-rate mix (the cluster
// list, a cluster, its 64 nodes, its 4 hierarchies, its latest 100
// events) served by the whole handler (request id, metrics, gate:
// routing, authentication, validation against the contract; the
// generated handler, PostgreSQL, encoding) but no network: the
// requests go to ServeHTTP, so cpu-us/op is what backstopd spends on
// one request beyond net/http's reading and writing (PostgreSQL's CPU
// is its own process's, not counted). One request at a time.
//
//	go test -run '^$' -bench Reads -benchtime 2000x ./server/
func BenchmarkReads(b *testing.B) {
	rc := newReadCluster(b, 64, 4)
	for _, p := range rc.paths {
		b.Run(p.kind, func(b *testing.B) {
			req := httptest.NewRequest("GET", p.path, nil)
			req.Header.Set("Authorization", "Bearer "+adminSecret)
			serve := func() *httptest.ResponseRecorder {
				w := httptest.NewRecorder()
				rc.e.srv.ServeHTTP(w, req.Clone(req.Context()))
				return w
			}
			if w := serve(); w.Code != 200 {
				b.Fatalf("GET %s: %d %s", p.path, w.Code, w.Body)
			} else if dir := os.Getenv("BACKSTOP_BENCH_DUMP"); dir != "" {
				_ = os.WriteFile(filepath.Join(dir, p.kind+".json"), w.Body.Bytes(), 0o644)
			} else if p.kind == "nodes" && strings.Count(w.Body.String(), `"path_id"`) != 128 {
				b.Fatalf("nodes without their reports: %s", w.Body)
			}
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if w := serve(); w.Code != 200 {
					b.Fatalf("GET %s: %d", p.path, w.Code)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}
