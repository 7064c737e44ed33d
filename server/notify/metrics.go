package notify

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backstop-ha/backstop"
)

// metrics are the delivery metrics, per target.
type metrics struct {
	attempts *prometheus.CounterVec
	failures *prometheus.CounterVec
	dead     *prometheus.CounterVec
	lag      *prometheus.HistogramVec
	backlog  *backlogCollector
	pruned   prometheus.Counter
}

func newMetrics(st Store) *metrics {
	return &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backstop_delivery_attempts_total",
			Help: "Delivery attempts by this replica, by target and outcome (delivered, retry, failed).",
		}, []string{"target_kind", "target_id", "outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backstop_delivery_failures_total",
			Help: "Failed delivery attempts by this replica (to be retried or given up), by target.",
		}, []string{"target_kind", "target_id"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backstop_delivery_dead_letters_total",
			Help: "Deliveries given up (retry budget spent or permanent error) by this replica, by target.",
		}, []string{"target_kind", "target_id"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "backstop_delivery_lag_seconds",
			Help:    "Time from an event's commit to its successful delivery, by target kind.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 18),
		}, []string{"target_kind"}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backstop_deliveries_pruned_total",
			Help: "Finished deliveries (with their attempts) deleted from the delivery log by this replica, past the retention.",
		}),
		backlog: &backlogCollector{
			store: st,
			pending: prometheus.NewDesc("backstop_delivery_backlog",
				"Deliveries pending (queued or waiting for a retry), by target; read from PostgreSQL, so the same on every replica.",
				[]string{"target_kind", "target_id", "target_name"}, nil),
			oldest: prometheus.NewDesc("backstop_delivery_oldest_pending_seconds",
				"Age of the oldest pending delivery, by target (0 when none).",
				[]string{"target_kind", "target_id", "target_name"}, nil),
		},
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.attempts, m.failures, m.dead, m.lag, m.backlog, m.pruned} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) attempt(t backstop.Target, outcome, status string, d backstop.Delivery) {
	m.attempts.WithLabelValues(t.Kind, t.ID, outcome).Inc()
	if outcome != backstop.OutcomeDelivered {
		m.failures.WithLabelValues(t.Kind, t.ID).Inc()
	}
	if status == backstop.DeliveryDeadLettered {
		m.dead.WithLabelValues(t.Kind, t.ID).Inc()
	}
	if status == backstop.DeliveryDelivered && !d.CreatedAt.IsZero() {
		m.lag.WithLabelValues(t.Kind).Observe(time.Since(d.CreatedAt).Seconds())
	}
}

// backlogCollector reads the backlog from PostgreSQL at each scrape.
type backlogCollector struct {
	store           Store
	pending, oldest *prometheus.Desc
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.oldest
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bs, err := c.store.DeliveryBacklog(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.pending, err)
		return
	}
	for _, b := range bs {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.Pending), b.Kind, b.TargetID, b.Name)
		age := 0.0
		if !b.Oldest.IsZero() {
			age = time.Since(b.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, b.Kind, b.TargetID, b.Name)
	}
}
