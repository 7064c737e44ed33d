package store_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backstop-ha/backstop/store/storetest"
)

// TestPoolCollector: the pool's statistics are exported, and they move:
// a query takes a connection, so the acquire count grows.
func TestPoolCollector(t *testing.T) {
	st := storetest.New(t)
	reg := prometheus.NewPedanticRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"pool": "api"}, reg).MustRegister(st.PoolCollector())
	acquires := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "backstop_db_pool_acquires_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("backstop_db_pool_acquires_total not exported")
		return 0
	}
	before := acquires()
	if err := st.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after := acquires(); after <= before {
		t.Fatalf("acquires %v after a query, %v before", after, before)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n++
			labeled := false
			for _, l := range m.GetLabel() {
				labeled = labeled || l.GetName() == "pool" && l.GetValue() == "api"
			}
			if !labeled {
				t.Errorf("%s has no pool label: %v", mf.GetName(), m.GetLabel())
			}
		}
	}
	if n != 9 {
		t.Fatalf("%d series, want 9 (4 connection states, 5 counters)", n)
	}
}
