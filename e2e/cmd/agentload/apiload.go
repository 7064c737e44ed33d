//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// apiLoad issues operator reads at a fixed rate (--api-rate) while a
// point is measured: open loop, so a request is sent when it is due
// whether or not the earlier ones were answered, and its latency is
// counted from when it was due, not from when it could be sent. A
// closed loop (or a scheduler that skips the ticks it missed) would wait
// out a slow server and report only the fast answers (coordinated
// omission); here a stall shows up in every request it delayed.
//
// The reads are what an operator's dashboard or a monitoring system
// asks, in turn: the cluster list, one cluster, its nodes, its
// hierarchies, and its latest page of events.
type apiLoad struct {
	rate    int
	token   string // an operator token, made by prepare
	base    string
	client  *http.Client
	targets []apiTarget
}

// apiTarget is one read: its path and what it reads (for per-read p99).
type apiTarget struct{ path, kind string }

// apiKinds are the reads, in the order they are cycled through.
var apiKinds = []string{"clusters", "cluster", "nodes", "hierarchies", "events"}

// apiResult is what one window of apiLoad measured.
type apiResult struct {
	sent          int
	p50, p99, max time.Duration
	errs          map[string]int // by status ("503") or transport error ("timeout", "error")
	p99By         map[string]time.Duration
}

// prepareAPILoad makes the operator token the reads use and the list of
// paths they cycle through.
func (e *env) prepareAPILoad(ctx context.Context, clusters []*loadCluster) (*apiLoad, error) {
	if e.apiLoad == nil {
		var tok struct {
			Secret string `json:"secret"`
		}
		if _, err := e.api.Do(ctx, "POST", "/v1/tokens", map[string]any{"name": "agentload-reader", "role": "operator"}, 201, &tok); err != nil {
			return nil, fmt.Errorf("operator token: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = e.api.HTTP.Transport.(*http.Transport).TLSClientConfig
		// Keep the connections the rate needs: the default two idle ones
		// per host would make most requests open a new connection.
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = 512, 512
		e.apiLoad = &apiLoad{rate: e.o.apiRate, token: tok.Secret, base: e.base, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	}
	l := e.apiLoad
	l.targets = l.targets[:0]
	for _, c := range clusters {
		// The latest page: 100 events back from the newest now.
		var seq int64
		for {
			var page struct {
				Items []struct {
					Seq int64 `json:"seq"`
				} `json:"items"`
			}
			if _, err := e.api.Do(ctx, "GET", fmt.Sprintf("/v1/clusters/%s/events?after=%d&limit=1000", c.id, seq), nil, 200, &page); err != nil {
				return nil, err
			}
			if len(page.Items) == 0 {
				break
			}
			seq = page.Items[len(page.Items)-1].Seq
			if len(page.Items) < 1000 {
				break
			}
		}
		for i, path := range []string{"/v1/clusters", "/v1/clusters/" + c.id, "/v1/clusters/" + c.id + "/nodes",
			"/v1/clusters/" + c.id + "/hierarchies", fmt.Sprintf("/v1/clusters/%s/events?after=%d&limit=100", c.id, max(0, seq-100))} {
			l.targets = append(l.targets, apiTarget{path, apiKinds[i]})
		}
	}
	return l, nil
}

// run issues rate requests a second for d and returns what it measured.
func (l *apiLoad) run(ctx context.Context, d time.Duration) apiResult {
	var mu sync.Mutex
	var lats []time.Duration
	by := map[string][]time.Duration{}
	errs := map[string]int{}
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(l.rate)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	n := 0
	for ; ; n++ {
		due := start.Add(time.Duration(n) * interval)
		if due.Sub(start) >= d {
			break
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return apiResult{}
			case <-timer.C:
			}
		}
		tg := l.targets[n%len(l.targets)]
		wg.Go(func() {
			status := l.get(ctx, tg.path)
			lat := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			if status != "200" {
				errs[status]++
				return
			}
			lats = append(lats, lat)
			by[tg.kind] = append(by[tg.kind], lat)
		})
	}
	wg.Wait()
	p99By := map[string]time.Duration{}
	for k, ls := range by {
		p99By[k] = pct(ls, 99)
	}
	return apiResult{sent: n, p50: pct(lats, 50), p99: pct(lats, 99), max: pct(lats, 100), errs: errs, p99By: p99By}
}

// get reads path to the end and returns the status, or what failed.
func (l *apiLoad) get(ctx context.Context, path string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+path, nil)
	if err != nil {
		return "error"
	}
	req.Header.Set("Authorization", "Bearer "+l.token)
	resp, err := l.client.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "Timeout") || strings.Contains(err.Error(), "deadline") {
			return "timeout"
		}
		return "error"
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "error"
	}
	return fmt.Sprint(resp.StatusCode)
}

// byKindString renders the p99 of each read, in cycle order.
func (r apiResult) byKindString() string {
	var parts []string
	for _, k := range apiKinds {
		if d, ok := r.p99By[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, msf(d)))
		}
	}
	return strings.Join(parts, ", ")
}

// errString renders the errors as "503: 4, timeout: 1" ("0" for none).
func (r apiResult) errString() string {
	if len(r.errs) == 0 {
		return "0"
	}
	var ks []string
	for k := range r.errs {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s: %d", k, r.errs[k]))
	}
	return strings.Join(parts, ", ")
}

// poolStats are backstopd's API pool counters (/metrics, pool="api").
type poolStats struct {
	ok                      bool
	acquires, waited, waitS float64
}

// scrapePool reads the pool counters from backstopd's /metrics (no
// token needed); ok false when it has none (an older backstopd).
func (e *env) scrapePool(ctx context.Context) poolStats {
	var p poolStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/metrics", nil)
	if err != nil {
		return p
	}
	resp, err := e.api.HTTP.Do(req)
	if err != nil {
		return p
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return p
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !strings.Contains(rest, `pool="api"`) {
			continue
		}
		_, val, _ := strings.Cut(rest, "} ")
		var v float64
		if _, err := fmt.Sscan(val, &v); err != nil {
			continue
		}
		switch name {
		case "backstop_db_pool_acquires_total":
			p.acquires, p.ok = v, true
		case "backstop_db_pool_waited_acquires_total":
			p.waited = v
		case "backstop_db_pool_wait_seconds_total":
			p.waitS = v
		}
	}
	return p
}
