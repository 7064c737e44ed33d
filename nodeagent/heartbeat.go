package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/client"
)

// heartbeatLoop sends a heartbeat every timing.heartbeat_ms (measured from
// one send to the next) until ctx ends, and feeds the watchdog while the
// agent's loops are healthy.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	var fails int
	var lastLog time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		sentAt := time.Now()
		// Not cut by ctx: a heartbeat the control plane may still receive
		// after this process asked for a restart hold would end the hold
		// there while the guard keeps it. Each try has its own timeout.
		err := a.heartbeatOnce(context.WithoutCancel(ctx), sentAt)
		a.firstHBOnce.Do(func() { close(a.firstHeartbeat) })
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			fails++
			if fails == 1 || time.Since(lastLog) >= 5*time.Second {
				lastLog = time.Now()
				rem, _ := a.lease.remaining()
				a.log.Warn("heartbeat failed", keyEvent, eventHeartbeatFailed, keyErr, err, "consecutive_failures", fails,
					keyLeaseRemaining, rem.Milliseconds(), keyServer, a.api.server())
			}
		case fails > 0:
			a.log.Info("heartbeats acknowledged again", "failed_before", fails, keyServer, a.api.server())
			fails = 0
		}
		a.live.beat("heartbeat")
		a.feedWatchdog()
		timer.Reset(max(time.Until(sentAt.Add(ms(a.timing().HeartbeatMS))), 0))
	}
}

// feedWatchdog writes a keepalive unless a loop is stuck or fencing
// failed.
func (a *Agent) feedWatchdog() {
	if a.wd == nil {
		return
	}
	if a.withholdWatchdog.Load() {
		return
	}
	if stale := a.live.stale(); len(stale) > 0 {
		a.log.Error("agent loops stuck: withholding watchdog keepalives", keyEvent, eventWatchdogUnhealthy,
			keyReason, "stuck_loops", "loops", stale)
		return
	}
	if err := a.wd.kick(); err != nil {
		a.log.Error("watchdog keepalive failed", keyErr, err)
	}
}

// heartbeatOnce sends one heartbeat and applies its answer. sentAt, taken
// before anything is built or sent, is where the renewed lease counts
// from: earlier than the real send, so on the safe side.
func (a *Agent) heartbeatOnce(ctx context.Context, sentAt time.Time) error {
	hb := a.buildHeartbeat()
	nFences := 0
	if hb.Fences != nil {
		nFences = len(*hb.Fences)
	}
	// An answer later than one lease is worthless; don't wait longer.
	perTry := min(max(ms(a.timing().LeaseTTLMS), 200*time.Millisecond), 10*time.Second)
	a.met.heartbeatsSent.Inc()
	resp, err := call(ctx, a.api, perTry, func(ctx context.Context, c *client.ClientWithResponses) (*client.AgentHeartbeatResponse, error) {
		return c.AgentHeartbeatWithResponse(ctx, hb)
	})
	if err != nil {
		return err
	}
	if resp.StatusCode() != http.StatusOK || resp.JSON200 == nil {
		return unexpected(resp)
	}
	ack := resp.JSON200
	if ack.LeaseTtlMs < 0 {
		return fmt.Errorf("heartbeat answer with lease_ttl_ms %d", ack.LeaseTtlMs)
	}
	if ack.LeaseTtlMs == 0 {
		// The control plane had declared this node down: its hierarchies
		// may be starting elsewhere now. Renew nothing, stop vouching
		// until a real lease comes back, and fence what runs here at
		// once; the next heartbeat gets a lease again, and the fetched
		// configuration says what is still placed here.
		a.declaredDown.Store(true)
		a.fences.ack(nFences)
		rem, _ := a.lease.remaining()
		v, n := a.visibility(time.Now())
		a.log.Error("the control plane declared this node down: fencing what runs here", keyEvent, eventDeclaredDown,
			keyLeaseRemaining, rem.Milliseconds())
		a.fenceWith("the control plane declared this node down", rem, v, n)
		select {
		case a.configKick <- struct{}{}:
		default:
		}
		return nil
	}
	a.met.heartbeatsAcked.Inc()
	// Fetch the configuration again after this process's first answer
	// and after every reconnection: placements may have moved while this
	// node was away, and reconcile must see them before anything acts.
	refresh := false
	select {
	case <-a.firstAck:
	default:
		refresh = true
	}
	a.declaredDown.Store(false)
	if a.lease.renew(sentAt, ms(ack.LeaseTtlMs)) {
		refresh = true
		rem, _ := a.lease.remaining()
		a.log.Info("lease renewed after it had expired", keyEvent, eventLeaseRenewed, keyLeaseRemaining, rem.Milliseconds())
	}
	a.firstAckOnce.Do(func() { close(a.firstAck) })
	a.fences.ack(nFences)
	if raised, err := a.mem.observeTerm(ack.Term); err != nil {
		a.log.Error("cannot persist the leader term", keyErr, err)
	} else if raised {
		a.log.Info("new leader term", keyTerm, ack.Term)
	}
	if refresh || ack.ConfigVersion != a.appliedVersion() {
		select {
		case a.configKick <- struct{}{}:
		default:
		}
	}
	return nil
}

// buildHeartbeat gathers what a heartbeat reports.
func (a *Agent) buildHeartbeat() client.Heartbeat {
	hb := client.Heartbeat{ConfigVersion: max(a.appliedVersion(), 0), Instance: &a.instance}
	hiers, res := a.runner.reports(a.knownHierarchies(), a.mem.epochOf)
	if len(hiers) > 1024 {
		hiers = hiers[:1024]
	}
	// Lists are never null on the wire: the contract has no nullable arrays.
	if hiers == nil {
		hiers = []client.HierarchyReport{}
	}
	if res == nil {
		res = []client.ResourceHealth{}
	}
	hb.Hierarchies = &hiers
	hb.Resources = &res
	paths := a.paths.reports()
	if paths == nil {
		paths = []client.PathReport{}
	}
	hb.Paths = &paths
	if f := a.fences.pending(); len(f) > 0 {
		hb.Fences = &f
	}
	return hb
}

// appliedVersion is the version of the configuration in force (0 before
// any).
func (a *Agent) appliedVersion() int64 {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	if a.conf == nil {
		return 0
	}
	return a.conf.Version
}

// knownHierarchies returns the ids of the configuration's hierarchies.
func (a *Agent) knownHierarchies() []string {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	if a.conf == nil {
		return nil
	}
	out := make([]string, 0, len(a.conf.Hierarchies))
	for _, h := range a.conf.Hierarchies {
		out = append(out, h.Id.String())
	}
	return out
}

// configLoop fetches the configuration whenever a heartbeat answer
// announces another version.
func (a *Agent) configLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.configKick:
		}
		if err := a.fetchConfig(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("cannot fetch the configuration; retrying after the next heartbeat", keyErr, err)
		}
	}
}

// fetchConfig gets, checks, caches and applies the configuration.
func (a *Agent) fetchConfig(ctx context.Context) error {
	resp, err := call(ctx, a.api, 10*time.Second, func(ctx context.Context, c *client.ClientWithResponses) (*client.AgentConfigResponse, error) {
		return c.AgentConfigWithResponse(ctx)
	})
	if err != nil {
		return err
	}
	if resp.StatusCode() != http.StatusOK || resp.JSON200 == nil {
		return unexpected(resp)
	}
	conf := resp.JSON200
	if err := a.checkConfig(conf); err != nil {
		a.log.Error("configuration refused", keyEvent, eventConfigRejected, keyVersion, conf.Version, keyErr, err)
		return err
	}
	// Cache first: a takeover must never depend on reading the
	// configuration at the moment of failure.
	if err := writeFileAtomic(filepath.Join(a.cfg.DataDir, fileConfig), resp.Body); err != nil {
		a.log.Error("cannot cache the configuration", keyErr, err)
	}
	a.applyConfig(conf, "server")
	return nil
}

// checkConfig refuses a configuration of another node or with unusable
// timing.
func (a *Agent) checkConfig(c *client.AgentConfig) error {
	if id := a.identity(); id != nil {
		if c.NodeId.String() != id.NodeID || c.ClusterId.String() != id.ClusterID {
			return fmt.Errorf("configuration is for node %s of cluster %s, this is node %s of cluster %s",
				c.NodeId, c.ClusterId, id.NodeID, id.ClusterID)
		}
	}
	t := timingOf(c.Timing)
	if t.HeartbeatMS <= 0 || t.LeaseTTLMS <= 0 || t.PathHeartbeatMS <= 0 || t.PathDeadAfter <= 0 ||
		t.QuickCheckIntervalMS <= 0 || t.DeepCheckIntervalMS <= 0 {
		return errors.New("configuration timing has non-positive values")
	}
	return nil
}

func timingOf(t client.Timing) backstop.Timing {
	return backstop.Timing{HeartbeatMS: t.HeartbeatMs, LeaseTTLMS: t.LeaseTtlMs, ServerGraceMS: t.ServerGraceMs,
		PathHeartbeatMS: t.PathHeartbeatMs, PathDeadAfter: t.PathDeadAfter,
		QuickCheckIntervalMS: t.QuickCheckIntervalMs, DeepCheckIntervalMS: t.DeepCheckIntervalMs}
}

// applyConfig puts a checked configuration in force, live: signing keys
// (endorsed ones only), timing, fencing policy and paths.
func (a *Agent) applyConfig(c *client.AgentConfig, from string) {
	if _, err := a.keys.offer(c.SigningKeys, time.Now()); err != nil {
		a.log.Error("cannot persist the trusted keys", keyErr, err)
	}
	t := timingOf(c.Timing)
	a.cfgMu.Lock()
	a.conf, a.tim = c, t
	a.cfgMu.Unlock()
	peers := make([]string, 0, len(c.Peers))
	for _, p := range c.Peers {
		peers = append(peers, p.NodeId.String())
	}
	a.paths.configure(pathsConfig{ClusterID: c.ClusterId.String(), NodeID: c.NodeId.String(), Key: c.PathKey,
		Interval: ms(t.PathHeartbeatMS), DeadAfter: t.PathDeadAfter, Paths: c.Paths, Peers: peers})
	a.log.Info("configuration applied", keyEvent, eventConfigApplied, keyVersion, c.Version, "from", from,
		"heartbeat_ms", t.HeartbeatMS, "lease_ttl_ms", t.LeaseTTLMS, "fencing", string(c.Fencing),
		"peers", len(c.Peers), "paths", len(c.Paths), keyHierarchies, len(c.Hierarchies))
	if from == "server" {
		a.reconcile(c)
	}
}

// reconcile takes out of service here every hierarchy the control plane
// has placed elsewhere, or here at a newer epoch, than what this node
// runs: it was moved while this node was cut off (or rebooted). It only
// ever stops things.
func (a *Agent) reconcile(c *client.AgentConfig) {
	a.cfgMu.Lock()
	a.serverPlacement = map[string]placementView{}
	for _, h := range c.Hierarchies {
		pv := placementView{epoch: h.Placement.Epoch, state: string(h.Placement.State)}
		if h.Placement.NodeId != nil {
			pv.node = h.Placement.NodeId.String()
		}
		a.serverPlacement[h.Id.String()] = pv
	}
	a.cfgMu.Unlock()
	self := c.NodeId.String()
	for _, h := range a.runner.list() {
		h.mu.Lock()
		active, epoch := h.st.Active || h.st.State == stateInService, h.st.Epoch
		h.mu.Unlock()
		pv, known := a.serverPlacement[h.id]
		if !active || !known {
			continue
		}
		// A configuration read before this node's newest command has an
		// older epoch: it says nothing about that placement.
		if pv.epoch > epoch || (pv.epoch == epoch && pv.node != self) {
			why := fmt.Sprintf("the control plane placed the hierarchy on node %s at epoch %d while this node ran epoch %d", pv.node, pv.epoch, epoch)
			go a.runner.relinquish(h, why)
		}
	}
}

// placementView is the control plane's placement of a hierarchy, as the
// configuration fetched by this process says.
type placementView struct {
	node  string
	epoch int64
	state string
}

// authority says whether this node may act on its own (local recovery) on
// a hierarchy it runs at epoch: while its lease is valid, and either this
// process brought it in service on a signed command at that epoch, or a
// configuration fetched from the control plane by this process still
// places the hierarchy here at that epoch.
//
// byCommand skips the placement check, so the runner must only pass it
// for the placement the command made: it is false once the hierarchy was
// fenced or relinquished or left service (cmdEpoch is cleared, the
// generation moved on), and whatever this answers, the runner's
// operation bracket refuses local recovery unless the hierarchy is still
// in service and active at the generation its monitor saw.
func (a *Agent) authority(hierarchyID string, epoch int64, byCommand bool) (bool, string) {
	if rem, ok := a.lease.remaining(); !ok || rem <= 0 {
		return false, "this node holds no valid lease"
	}
	if byCommand {
		return true, "" // this process brought it in service on a signed command at this epoch
	}
	a.cfgMu.RLock()
	pv, known := a.serverPlacement[hierarchyID]
	self := ""
	if a.conf != nil {
		self = a.conf.NodeId.String()
	}
	a.cfgMu.RUnlock()
	switch {
	case !known:
		return false, "no configuration from the control plane confirms the placement yet"
	case pv.node != self || pv.epoch != epoch:
		return false, fmt.Sprintf("the control plane places it on node %s at epoch %d, not here at epoch %d", pv.node, pv.epoch, epoch)
	}
	return true, ""
}
