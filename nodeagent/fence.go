package nodeagent

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/client"
)

// fenceVerdict is what the fence watcher decides.
type fenceVerdict int

const (
	// verdictHold: the lease is valid, or nothing runs here.
	verdictHold fenceVerdict = iota
	// verdictMajority: the lease is gone but a majority of the cluster is
	// visible over the paths, so the control plane will find this node
	// "unreachable", not "down", and nothing moves.
	verdictMajority
	// verdictFence: lease gone in isolation, fencing=self.
	verdictFence
	// verdictDisabled: would fence, but fencing=none.
	verdictDisabled
)

// majority reports whether visible of total nodes are a strict majority:
// alone in a 2-node cluster (1 of 2) is not.
func majority(visible, total int) bool { return visible*2 > total }

// fenceInput is what the decision depends on.
type fenceInput struct {
	LeaseExpired bool
	Visible      int
	Total        int
	Active       int // hierarchies that may run here
	Policy       string
}

// decideFence is the self-fencing rule of the safety promise: fence when
// the lease has run out and this node cannot see a majority of its
// cluster, unless nothing runs here or the policy leaves fencing to
// external means.
func decideFence(in fenceInput) fenceVerdict {
	switch {
	case !in.LeaseExpired:
		return verdictHold
	case majority(in.Visible, in.Total):
		return verdictMajority
	case in.Active == 0:
		return verdictHold
	case in.Policy == backstop.FencingNone:
		return verdictDisabled
	}
	return verdictFence
}

// fenceWatch is the fence watcher's own state (one goroutine).
type fenceWatch struct {
	loggedMajority bool
	loggedDisabled bool
}

// fenceLoop checks the fencing rule every half heartbeat, and right when
// the lease deadline passes, until ctx ends.
func (a *Agent) fenceLoop(ctx context.Context) {
	var w fenceWatch
	timer := time.NewTimer(0)
	defer timer.Stop()
	var notices chan guardMsg // nil without a guard: never ready
	if a.guard != nil {
		notices = a.guard.fenced
	}
	for {
		t := a.timing()
		// Every half heartbeat and half path interval: the guard's
		// vouch, renewed here, reaches less than a path interval ahead.
		wait := max(min(ms(t.HeartbeatMS), ms(t.PathHeartbeatMS))/2, 5*time.Millisecond)
		if rem, ok := a.lease.remaining(); ok && rem > 0 && rem < wait {
			wait = rem + time.Millisecond
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case m := <-notices:
			a.adoptGuardFence(m)
			continue
		case <-timer.C:
		}
		a.live.beat("fence")
		now := time.Now()
		a.fenceCheck(&w, now)
		a.feedGuard(now)
	}
}

// feedGuard grants the fence guard its next deadline: the later of the
// lease deadline and the vouch, the time before which a majority of the
// cluster is known, from its echoes, to keep seeing this node over the
// paths (pathManager.seenBy), so that the control plane finds the node
// unreachable, not down. The vouch is granted whenever it exists, not
// only once the lease ran out: under load the agent's loops may run late,
// and a healthy node whose peers see it must not be fenced because its
// heartbeat answer was slow. Without either, the guard fences when the
// last deadline passes, as the agent itself would. The boot clock is read
// first, so that a pause of the agent between the readings can only make
// the granted deadline earlier, never later.
func (a *Agent) feedGuard(now time.Time) {
	if a.guard == nil {
		return
	}
	boot := boottime()
	if a.fencingPolicy() == backstop.FencingNone {
		a.guard.disarm("the cluster's fencing policy is none")
		return
	}
	if a.alone() {
		// Nothing can start a second copy, and the control plane never
		// declares a lone node down: fencing would only be an outage.
		a.guard.disarm("this node is its cluster's only node")
		return
	}
	rem, ok := a.lease.remaining()
	if !ok {
		return
	}
	grant := rem
	if a.settled(now) && !a.declaredDown.Load() {
		if v, ok := a.paths.seenBy(now, a.lease.lastAckTime()); ok && v > grant {
			grant = v
		}
	}
	if grant > 0 {
		a.guard.arm(boot + grant)
	}
}

// adoptGuardFence follows a fencing done by the fence guard: the agent
// fences too (with its own kit instances, so that its running operations,
// monitors and recorded states agree; a resource already killed is
// killed again at no cost), reports it, then acknowledges, so that the
// guard knows this agent is alive and does not kill it.
func (a *Agent) adoptGuardFence(m guardMsg) {
	a.log.Error("the fence guard fenced this node: the agent did not renew its lease in time", keyEvent, eventGuardFenced,
		keyReason, m.Reason, keyHierarchies, m.Hierarchies, keyDurationMS, m.TookMS, "failures", m.Failures)
	rem, _ := a.lease.remaining()
	v, n := a.visibility(time.Now())
	a.fenceWith(m.Reason, rem, v, n)
	a.guard.ack(m.Fenced)
}

// settled reports whether the agent has been up long enough to judge its
// isolation: its first heartbeat got an answer or failed, and the paths
// had one dead-after period to show their peers.
func (a *Agent) settled(now time.Time) bool {
	select {
	case <-a.firstHeartbeat:
	default:
		return false
	}
	t := a.timing()
	return now.Sub(a.startedAt) >= ms(t.PathHeartbeatMS*t.PathDeadAfter)
}

// visibility returns how many nodes this node sees and the cluster's
// size. Before any configuration the peers are unknown: the node then
// counts as one of at least two, so that it never believes itself a
// majority by ignorance.
func (a *Agent) visibility(now time.Time) (visible, total int) {
	visible, total = a.paths.visible(now)
	a.cfgMu.RLock()
	none := a.conf == nil
	a.cfgMu.RUnlock()
	if none {
		total = max(total, 2)
	}
	return visible, total
}

// isolated reports whether the lease has run out and the node cannot see
// a majority, with the counts.
func (a *Agent) isolated(now time.Time) (bool, int, int) {
	rem, ok := a.lease.remaining()
	if !ok || rem > 0 {
		return false, 0, 0
	}
	v, n := a.visibility(now)
	return !majority(v, n), v, n
}

// fenceCheck applies the rule once.
func (a *Agent) fenceCheck(w *fenceWatch, now time.Time) {
	rem, ok := a.lease.remaining()
	if !ok || rem > 0 || !a.settled(now) {
		return
	}
	if a.lease.markExpired() {
		w.loggedMajority, w.loggedDisabled = false, false
		a.log.Warn("lease expired", keyEvent, eventLeaseExpired, keyLeaseRemaining, rem.Milliseconds(),
			keySinceAckMS, a.lease.sinceAck().Milliseconds())
	}
	active := a.runner.activeIDs()
	visible, total := a.visibility(now)
	policy := a.fencingPolicy()
	switch decideFence(fenceInput{LeaseExpired: true, Visible: visible, Total: total, Active: len(active), Policy: policy}) {
	case verdictHold:
	case verdictMajority:
		if !w.loggedMajority {
			w.loggedMajority = true
			a.log.Warn("lease expired but a majority of the cluster is visible over the paths: not fencing",
				keyEvent, eventMajorityVisible, keyLeaseRemaining, rem.Milliseconds(), keyVisible, visible, keyTotal, total)
		}
	case verdictDisabled:
		if !w.loggedDisabled {
			w.loggedDisabled = true
			a.log.Error("LEASE LOST IN ISOLATION, BUT FENCING IS 'none': hierarchies keep running here; external fencing must act",
				keyEvent, eventFenceDisabled, keyLeaseRemaining, rem.Milliseconds(), keyVisible, visible, keyTotal, total,
				keyHierarchies, active)
		}
	case verdictFence:
		a.fenceNow(rem, visible, total)
	}
}

// fenceNow fences every active hierarchy and queues the report.
func (a *Agent) fenceNow(rem time.Duration, visible, total int) {
	reason := fmt.Sprintf("lease expired %d ms ago and %d of %d nodes visible", -rem.Milliseconds(), visible, total)
	a.fenceWith(reason, rem, visible, total)
}

// fenceWith fences every active hierarchy for reason and queues the
// report.
func (a *Agent) fenceWith(reason string, rem time.Duration, visible, total int) {
	res := a.runner.fence(reason)
	if len(res.Hierarchies) == 0 {
		return
	}
	a.met.fences.Inc()
	a.met.fenceSeconds.Observe(res.Took.Seconds())
	// lease_remaining_ms is the lease at the decision (≤ 0): the fast kill
	// itself took duration_ms after it.
	a.log.Error("fenced: took every active hierarchy out of service by fast kill", keyEvent, eventFenced,
		keyReason, reason, keyHierarchies, res.Hierarchies, keyDurationMS, float64(res.Took.Microseconds())/1000,
		keyLeaseRemaining, rem.Milliseconds(), keySinceAckMS, a.lease.sinceAck().Milliseconds(),
		keyVisible, visible, keyTotal, total, "failures", res.Failures)
	if len(res.Failures) > 0 && a.wd != nil {
		// Some resource could not be killed: stop feeding the watchdog,
		// so that the node reboots rather than keep serving.
		a.withholdWatchdog.Store(true)
		a.log.Error("fencing failed: withholding watchdog keepalives so that the node reboots",
			keyEvent, eventWatchdogUnhealthy, keyReason, "fence_failed")
	}
	rep := client.FenceReport{At: time.Now().UTC(), Reason: reason, Hierarchies: []uuid.UUID{}}
	d := float32(float64(res.Took) / float64(time.Millisecond))
	rep.DurationMs = &d
	for _, id := range res.Hierarchies {
		if u, err := uuid.Parse(id); err == nil {
			rep.Hierarchies = append(rep.Hierarchies, u)
		}
	}
	if len(res.Hierarchies) > 0 {
		a.fences.add(rep)
	}
}

// fencingPolicy returns the configured policy (self before any
// configuration: the cluster default).
func (a *Agent) fencingPolicy() string {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	if a.conf == nil || a.conf.Fencing == "" {
		return backstop.FencingSelf
	}
	return string(a.conf.Fencing)
}

// alone reports whether the applied configuration names no peer: a
// one-node cluster.
func (a *Agent) alone() bool {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return a.conf != nil && len(a.conf.Peers) == 0
}
