package nodeagent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's Prometheus metrics, on a registry of its own
// (several agents can live in one test process).
type metrics struct {
	reg *prometheus.Registry

	heartbeatsSent    prometheus.Counter
	heartbeatsAcked   prometheus.Counter
	commandsAccepted  prometheus.Counter
	commandsRejected  *prometheus.CounterVec
	commandResults    *prometheus.CounterVec
	checkFailures     *prometheus.CounterVec
	restarts          *prometheus.CounterVec
	hierarchyFailures prometheus.Counter
	fences            prometheus.Counter
	fenceSeconds      prometheus.Histogram
	pathPackets       *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		heartbeatsSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "backstop_agent_heartbeats_sent_total",
			Help: "Heartbeats sent to the control plane."}),
		heartbeatsAcked: prometheus.NewCounter(prometheus.CounterOpts{Name: "backstop_agent_heartbeats_acked_total",
			Help: "Heartbeats acknowledged (lease renewed)."}),
		commandsAccepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "backstop_agent_commands_accepted_total",
			Help: "Signed commands that passed verification."}),
		commandsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backstop_agent_commands_rejected_total",
			Help: "Commands refused, by reason code."}, []string{"reason"}),
		commandResults: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backstop_agent_command_results_total",
			Help: "Executed commands by action and status."}, []string{"action", "status"}),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backstop_agent_check_failures_total",
			Help: "Failed resource checks."}, []string{"hierarchy_id", "resource", "check"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backstop_agent_local_restarts_total",
			Help: "Local restarts (local recovery) of resources."}, []string{"hierarchy_id", "resource"}),
		hierarchyFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "backstop_agent_hierarchy_failures_total",
			Help: "Hierarchies failed on this node after local recovery was exhausted."}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{Name: "backstop_agent_fences_total",
			Help: "Self-fencings (lease lost in isolation)."}),
		fenceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "backstop_agent_fence_duration_seconds",
			Help: "How long a self-fencing's fast kill took.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		pathPackets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backstop_agent_path_packets_total",
			Help: "Path heartbeat packets by outcome (sent, accepted, or why dropped)."}, []string{"result"}),
	}
	m.reg.MustRegister(m.heartbeatsSent, m.heartbeatsAcked, m.commandsAccepted, m.commandsRejected, m.commandResults,
		m.checkFailures, m.restarts, m.hierarchyFailures, m.fences, m.fenceSeconds, m.pathPackets,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// pathCollector exports the communication paths' state at scrape time.
type pathCollector struct {
	paths *pathManager
	up    *prometheus.Desc
	rtt   *prometheus.Desc
	loss  *prometheus.Desc
}

func newPathCollector(p *pathManager) *pathCollector {
	l := []string{"path_id", "peer_node_id"}
	return &pathCollector{paths: p,
		up:   prometheus.NewDesc("backstop_agent_path_up", "1 when authenticated heartbeats arrive on the path.", l, nil),
		rtt:  prometheus.NewDesc("backstop_agent_path_rtt_seconds", "Smoothed round-trip time of the path.", l, nil),
		loss: prometheus.NewDesc("backstop_agent_path_loss_ratio", "Fraction of recent path heartbeats lost.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *pathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.rtt
	ch <- c.loss
}

// Collect implements prometheus.Collector.
func (c *pathCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.paths.snapshot() {
		up := 0.0
		if p.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, p.PathID, p.Peer)
		ch <- prometheus.MustNewConstMetric(c.loss, prometheus.GaugeValue, p.Loss, p.PathID, p.Peer)
		if p.HasRTT {
			ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, p.RTT.Seconds(), p.PathID, p.Peer)
		}
	}
}
