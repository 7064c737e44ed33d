package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backstop-ha/backstop"
)

// httpMetrics are the API's request metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	recovery prometheus.Histogram
	// heartbeats counts heartbeats answered 200 by lane and store path.
	heartbeats *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backstop_http_requests_total",
			Help: "API requests by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "backstop_http_request_duration_seconds",
			Help:    "API request latency by method and route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method", "route"}),
		recovery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "backstop_failover_recovery_seconds",
			Help:    "Time from a failure's detection (or a switchover's request) to the hierarchy in service on its new node.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60},
		}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backstop_agent_heartbeats_total",
			Help: "Heartbeats that renewed a lease, by lane (fast: decoded once, see the heartbeat fast lane; general: through the contract validator) and store path (renewed: grouped lease renewal; recorded: the full transaction that stores the report).",
		}, []string{"lane", "store"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.recovery, m.heartbeats} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(method, route).Observe(d.Seconds())
}

// fenceMetrics count the leader's fences through fence devices.
type fenceMetrics struct {
	attempts *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newFenceMetrics(reg prometheus.Registerer) (*fenceMetrics, error) {
	m := &fenceMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backstop_fence_attempts_total",
			Help: "Fences of down nodes through their fence devices run by this replica as leader, by agent and outcome (succeeded, failed).",
		}, []string{"agent", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "backstop_fence_duration_seconds",
			Help:    "Time of one fence attempt (off, then status) by agent and outcome.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60},
		}, []string{"agent", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.attempts, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ObserveFence records a fence attempt in the metrics (the engine's
// OnFence hook).
func (s *Server) ObserveFence(r backstop.FenceResult) {
	outcome := "failed"
	if r.OK {
		outcome = "succeeded"
	}
	s.fences.attempts.WithLabelValues(r.Agent, outcome).Inc()
	s.fences.duration.WithLabelValues(r.Agent, outcome).Observe(r.Duration.Seconds())
}
