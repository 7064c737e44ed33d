package store

import (
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports the connection pool's statistics to Prometheus:
// how many connections are in use, and how often and how long requests
// waited for one. Under load, time spent waiting for a connection is
// part of every request's latency (heartbeats, API reads, the engine
// share one pool) and is invisible in PostgreSQL's own statistics.
func (s *Store) PoolCollector() prometheus.Collector { return poolCollector{s} }

type poolCollector struct{ s *Store }

var (
	poolConns = prometheus.NewDesc("backstop_db_pool_connections",
		"Connections of backstopd's PostgreSQL pool, by state (acquired, idle, constructing) and its maximum (max).", []string{"state"}, nil)
	poolAcquires = prometheus.NewDesc("backstop_db_pool_acquires_total",
		"Connections taken from the pool.", nil, nil)
	poolEmptyAcquires = prometheus.NewDesc("backstop_db_pool_waited_acquires_total",
		"Acquires that found no idle connection and had to wait for one (or for a new one).", nil, nil)
	poolWait = prometheus.NewDesc("backstop_db_pool_wait_seconds_total",
		"Time acquires spent waiting for a connection when none was idle.", nil, nil)
	poolCanceled = prometheus.NewDesc("backstop_db_pool_canceled_acquires_total",
		"Acquires given up (their request's context ended) while waiting for a connection.", nil, nil)
	poolNew = prometheus.NewDesc("backstop_db_pool_new_connections_total",
		"Connections opened (each a new PostgreSQL session).", nil, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConns, poolAcquires, poolEmptyAcquires, poolWait, poolCanceled, poolNew} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.pool.Stat()
	for state, n := range map[string]int32{"acquired": st.AcquiredConns(), "idle": st.IdleConns(), "constructing": st.ConstructingConns(), "max": st.MaxConns()} {
		ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(st.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolEmptyAcquires, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWait, prometheus.CounterValue, st.EmptyAcquireWaitTime().Seconds())
	ch <- prometheus.MustNewConstMetric(poolCanceled, prometheus.CounterValue, float64(st.CanceledAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolNew, prometheus.CounterValue, float64(st.NewConnsCount()))
}
