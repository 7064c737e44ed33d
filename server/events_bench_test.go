package server_test

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/backstop-ha/backstop/server/notify"
)

// BenchmarkEventDelivery writes b.N events through the API (maintenance
// on and off, by 4 concurrent clients on 4 clusters: writers of one
// cluster queue on its row lock) while delivery runs, with 3 webhook
// receivers and 1 SNMP v2c trap receiver (gosnmp's listener) subscribed
// to every event. It reports the write throughput and the delivery lag,
// from the event's transaction to its arrival at the receiver, p50 and
// p99 (webhooks and traps separately), and the time to drain the queue.
//
// "max" writes as fast as the writers can; "100/s" paces them to 100
// events a second in all, to show the lag of a system that keeps up.
//
//	go test -run '^$' -bench EventDelivery -benchtime 2000x ./server/
func BenchmarkEventDelivery(b *testing.B) {
	b.Run("max", func(b *testing.B) { benchDelivery(b, 0) })
	b.Run("100/s", func(b *testing.B) { benchDelivery(b, 100) })
}

func benchDelivery(b *testing.B, rate int) {
	e := newDeliveryEnv(b, notify.Config{MaxAttempts: 5, Workers: 20})
	const writers = 4
	var cids, nids []string
	for i := range writers {
		cid, nid := clusterAndNode(e, fmt.Sprintf("bench-%d", i))
		cids, nids = append(cids, cid), append(nids, nid)
	}
	var hooks []*receiver
	for range 3 {
		r := newReceiver(b)
		r.at = map[string]time.Time{}
		r.subscribe(e, map[string]any{})
		hooks = append(hooks, r)
	}
	traps := newTrapReceiver(b)
	if resp, body := e.do("POST", "/v1/snmp-targets", map[string]any{"host": "127.0.0.1", "port": traps.port, "snmp_version": "v2c",
		"community": "public", "min_severity": "info"}); resp.StatusCode != 201 {
		b.Fatalf("snmp target: %d %s", resp.StatusCode, body)
	}

	perWriter := max(1, b.N/writers/2) // toggles: 2 events each
	total := perWriter * 2 * writers
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if rate == 0 {
				maintenance(e, cids[i], nids[i], perWriter)
				return
			}
			// Each writer makes a toggle (2 events) every writers*2/rate s.
			tick := time.NewTicker(time.Duration(writers*2) * time.Second / time.Duration(rate))
			defer tick.Stop()
			for range perWriter {
				<-tick.C
				maintenance(e, cids[i], nids[i], 1)
			}
		})
	}
	wg.Wait()
	written := time.Since(start)
	b.StopTimer()

	deadline := time.Now().Add(5 * time.Minute)
	done := func() bool {
		for _, r := range hooks {
			if len(r.received()) < total {
				return false
			}
		}
		return traps.count() >= total
	}
	for !done() {
		if time.Now().After(deadline) {
			b.Fatalf("not delivered after 5 minutes: hooks %d %d %d, traps %d of %d",
				len(hooks[0].received()), len(hooks[1].received()), len(hooks[2].received()), traps.count(), total)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	drained := time.Since(start)

	// The event's time (its transaction's) comes with the webhook body.
	eventAt := map[string]time.Time{}
	for _, d := range hooks[0].received() {
		eventAt[d.ID] = d.Data.At
	}
	var hookLag, trapLag []time.Duration
	for _, r := range hooks {
		r.mu.Lock()
		for id, at := range r.at {
			hookLag = append(hookLag, at.Sub(eventAt[id]))
		}
		r.mu.Unlock()
	}
	traps.mu.Lock()
	for id, at := range traps.at {
		trapLag = append(trapLag, at.Sub(eventAt[id]))
	}
	traps.mu.Unlock()
	b.ReportMetric(float64(total)/written.Seconds(), "events/s")
	b.ReportMetric(float64(total*4)/drained.Seconds(), "deliveries/s")
	b.ReportMetric(pct(hookLag, 50), "hook-p50-ms")
	b.ReportMetric(pct(hookLag, 99), "hook-p99-ms")
	b.ReportMetric(pct(trapLag, 50), "trap-p50-ms")
	b.ReportMetric(pct(trapLag, 99), "trap-p99-ms")
	b.ReportMetric(drained.Seconds(), "drain-s")
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[min(len(ds)-1, len(ds)*p/100)].Microseconds()) / 1000
}

// trapReceiver is gosnmp's trap listener on a loopback port, recording
// when each event's trap arrived.
type trapReceiver struct {
	port int
	mu   sync.Mutex
	at   map[string]time.Time // by backstopEventId
}

func newTrapReceiver(b testing.TB) *trapReceiver {
	tr := &trapReceiver{at: map[string]time.Time{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tr.port = pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	l := gosnmp.NewTrapListener()
	l.Params = &gosnmp.GoSNMP{Version: gosnmp.Version2c, Community: "public", Logger: gosnmp.NewLogger(nil)}
	l.OnNewTrap = func(p *gosnmp.SnmpPacket, _ *net.UDPAddr) {
		for _, v := range p.Variables {
			if v.Name == ".1.3.6.1.4.1.32473.1.1.2.0" {
				if id, ok := v.Value.([]byte); ok {
					tr.mu.Lock()
					tr.at[string(id)] = time.Now()
					tr.mu.Unlock()
				}
			}
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- l.Listen(fmt.Sprintf("127.0.0.1:%d", tr.port)) }()
	select {
	case <-l.Listening():
	case err := <-errc:
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	return tr
}

func (tr *trapReceiver) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.at)
}

func clusterAndNode(e *env, name string) (string, string) {
	e.t.Helper()
	var c, n struct {
		ID string `json:"id"`
	}
	for _, x := range []struct {
		path string
		into *struct {
			ID string `json:"id"`
		}
	}{{"/v1/clusters", &c}, {"", &n}} {
		path := x.path
		if path == "" {
			path = "/v1/clusters/" + c.ID + "/nodes"
		}
		resp, b := e.do("POST", path, map[string]any{"name": name})
		if resp.StatusCode != 201 {
			e.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, x.into); err != nil {
			e.t.Fatal(err)
		}
	}
	return c.ID, n.ID
}
