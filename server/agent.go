package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

// agentHandlers serve the node agents: enrollment, heartbeats, the
// command long poll and results, and the signing keys they verify
// commands with.
type agentHandlers struct {
	store   AgentStore
	log     *slog.Logger
	keys    Keyring
	waiters *waiters
	// slots admits heartbeats (admit); leases orders their shedding.
	slots  chan struct{}
	leases leaseBook
	// recovery observes the time from detection to recovery.
	recovery prometheus.Observer
	// heartbeats counts answered heartbeats by lane and store path.
	heartbeats *prometheus.CounterVec
	// pollWaiting is a test signal (River's elector tests have them): when
	// set, it is called each time a long poll found no command and starts
	// waiting to be woken, so a test can queue one then instead of
	// sleeping.
	pollWaiting atomic.Pointer[func(nodeID string)]
	// clientCert is Config.AgentClientCert: enrollment must come with a
	// client certificate of the key enrolled.
	clientCert bool
}

// Keyring signs commands; package signing implements it.
type Keyring interface {
	// Fingerprint is the active key's fingerprint, for enrollment tokens.
	Fingerprint() string
	// Sign signs a command spec with the active key.
	Sign(backstop.CommandSpec) (backstop.SignedCommand, time.Time, time.Time, error)
	// Rotate makes a new key, endorsed by the active one, active.
	Rotate(ctx context.Context) (backstop.SigningKey, error)
}

// waiters wakes agents' long polls when commands are queued for them.
type waiters struct {
	// mu guards m.
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

func (w *waiters) add(nodeID string) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]map[chan struct{}]struct{}{}
	}
	if w.m[nodeID] == nil {
		w.m[nodeID] = map[chan struct{}]struct{}{}
	}
	w.m[nodeID][ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.m[nodeID], ch)
		if len(w.m[nodeID]) == 0 {
			delete(w.m, nodeID)
		}
	}
}

func (w *waiters) wake(nodeID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.m[nodeID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wakeAll wakes every poll.
func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, chs := range w.m {
		for ch := range chs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// run wakes long polls for commands queued on any replica and closes
// commands no agent will run, until ctx ends.
func (ah *agentHandlers) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			err := ah.store.ListenCommands(ctx, ah.waiters.wake)
			if ctx.Err() != nil {
				return
			}
			ah.log.WarnContext(ctx, "command listener stopped; restarting", "err", err)
			// Wake everyone so no poll waits on a missed notification.
			ah.waiters.wakeAll()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if n, err := ah.store.ExpireCommands(ctx, 60*time.Second); err != nil && ctx.Err() == nil {
				ah.log.WarnContext(ctx, "expire commands", "err", err)
			} else if n > 0 {
				ah.log.WarnContext(ctx, "closed commands no agent ran", "count", n)
			}
		}
	})
	wg.Wait()
}

func agentFrom(ctx context.Context) (backstop.AgentIdentity, error) {
	a, ok := backstop.AgentFrom(ctx)
	if !ok {
		return a, fmt.Errorf("%w: this endpoint needs an agent credential", backstop.ErrUnauthenticated)
	}
	return a, nil
}

func toAPISigningKey(k backstop.SigningKey) api.SigningKey {
	out := api.SigningKey{KeyId: k.KeyID, PublicKey: k.PublicKey, Fingerprint: envelope.Fingerprint(k.PublicKey), Active: k.Active, CreatedAt: k.CreatedAt}
	if k.EndorsedBy != "" {
		out.EndorsedBy = ptr(k.EndorsedBy)
		out.Endorsement = ptr(k.Endorsement)
	}
	return out
}

// AgentEnroll exchanges an enrollment token for the agent credential.
func (ah *agentHandlers) AgentEnroll(ctx context.Context, r api.AgentEnrollRequestObject) (api.AgentEnrollResponseObject, error) {
	b := r.Body
	if len(b.PublicKey) != 32 {
		return nil, backstop.Invalid("/public_key", "must be a 32-byte Ed25519 public key, base64-encoded (got %d bytes)", len(b.PublicKey))
	}
	facts := backstop.HostFacts{Hostname: b.Facts.Hostname, OS: b.Facts.Os, Kernel: deref(b.Facts.Kernel, ""), Arch: b.Facts.Arch, AgentVersion: b.Facts.AgentVersion}
	for _, i := range deref(b.Facts.Interfaces, nil) {
		facts.Interfaces = append(facts.Interfaces, backstop.HostInterface{Name: i.Name, MAC: deref(i.Mac, ""), Addresses: deref(i.Addresses, nil)})
	}
	if err := checkEnrollKey(ctx, ah.clientCert, b.PublicKey); err != nil {
		return nil, err
	}
	n, credential, err := ah.store.Enroll(ctx, b.EnrollmentToken, b.PublicKey, facts)
	if err != nil {
		return nil, err
	}
	keys, err := ah.store.ListSigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := api.AgentEnroll201JSONResponse{NodeId: apiID(n.ID), ClusterId: apiID(n.ClusterID), NodeName: n.Name, Credential: credential, SigningKeys: []api.SigningKey{}}
	for _, k := range keys {
		out.SigningKeys = append(out.SigningKeys, toAPISigningKey(k.SigningKey))
	}
	ah.log.InfoContext(ctx, "agent enrolled", "node_id", n.ID, "node", n.Name, "hostname", facts.Hostname)
	return out, nil
}

// AgentHeartbeat renews the node lease and records its report.
//
// Most heartbeats say nothing new: the node is up and its report differs
// from the stored one only in telemetry (round-trip times, check times).
// Those renew the lease with one UPDATE (store.RenewLease) and nothing
// else; the rest, and any the fast path turns down, take the full
// transaction. The store work does not follow the request's
// cancellation: a query cut by a cancelled context costs PostgreSQL a
// cancel request and pgx its connection (a new session), which is how an
// overloaded control plane collapsed. A heartbeat whose agent already
// gave up is not started, and heartbeats beyond what the database can
// take are refused with 503 and Retry-After before any work is done on
// them (the gate calls admit).
func (ah *agentHandlers) AgentHeartbeat(ctx context.Context, r api.AgentHeartbeatRequestObject) (api.AgentHeartbeatResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	hold := deref(r.Body.RestartHoldMs, 0)
	if hold < 0 || time.Duration(hold)*time.Millisecond > backstop.MaxRestartHold {
		return nil, backstop.Invalid("/restart_hold_ms", "must be between 0 and %d ms (got %d)", backstop.MaxRestartHold.Milliseconds(), hold)
	}
	// Detached from the request: see above. The timeout only bounds a
	// stuck database; the agent's own deadline is far shorter.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	now := time.Now()
	content := laneContent(ctx)
	if content == nil {
		content = reportDigest(r.Body)
	}
	digest := telemetryDigest(content, a.NodeID, now)
	if hold == 0 && deref(r.Body.Fences, nil) == nil && !reportsFailure(r.Body) {
		lr := backstop.LeaseRenewal{Digest: digest}
		if ah.leases.telemetryDue(a.NodeID, now) {
			// The stored report's telemetry period ended: store this
			// one, in the renewal, if nothing else changed.
			if lr.Report, err = json.Marshal(r.Body); err != nil {
				return nil, err
			}
			lr.Prev = telemetryDigest(content, a.NodeID, now.Add(-TelemetryEvery))
		}
		ack, ok, err := ah.store.RenewLease(sctx, a, lr)
		if err != nil {
			return nil, err
		}
		if ok {
			ah.leases.note(a.NodeID, time.Now(), ack.LeaseTTL, content)
			ah.countHeartbeat(ctx, "renewed")
			return api.AgentHeartbeat200JSONResponse{LeaseTtlMs: int(ack.LeaseTTL.Milliseconds()), Term: ack.Term, ConfigVersion: ack.ConfigVersion}, nil
		}
	}
	raw, err := json.Marshal(r.Body)
	if err != nil {
		return nil, err
	}
	rep := backstop.AgentReport{ConfigVersion: r.Body.ConfigVersion, Raw: raw, Instance: deref(r.Body.Instance, ""), Digest: digest}
	if hold > 0 {
		rep.RestartHold = time.Duration(hold) * time.Millisecond
		ah.log.InfoContext(ctx, "agent announces a restart", "node_id", a.NodeID, "node", a.NodeName, "restart_hold_ms", hold)
	}
	for _, h := range deref(r.Body.Hierarchies, nil) {
		rep.Hierarchies = append(rep.Hierarchies, backstop.HierarchyReport{HierarchyID: h.HierarchyId.String(), Epoch: h.Epoch, State: backstop.PlacementState(h.State), Detail: deref(h.Detail, "")})
	}
	for _, f := range deref(r.Body.Fences, nil) {
		fr := backstop.FenceReport{At: f.At, Reason: f.Reason}
		for _, h := range f.Hierarchies {
			fr.Hierarchies = append(fr.Hierarchies, h.String())
		}
		rep.Fences = append(rep.Fences, fr)
		ah.log.WarnContext(ctx, "agent reports it fenced itself", "node_id", a.NodeID, "node", a.NodeName, "at", f.At, "reason", f.Reason)
	}
	ack, err := ah.store.RecordHeartbeat(sctx, a, rep)
	if err != nil {
		return nil, err
	}
	ah.leases.note(a.NodeID, time.Now(), ack.LeaseTTL, content)
	ah.countHeartbeat(ctx, "recorded")
	return api.AgentHeartbeat200JSONResponse{LeaseTtlMs: int(ack.LeaseTTL.Milliseconds()), Term: ack.Term, ConfigVersion: ack.ConfigVersion}, nil
}

// fastLaneKey marks the context of a heartbeat the fast lane serves; its
// value is a fastLane.
type fastLaneKey struct{}

// fastLane is what the fast lane learned of a heartbeat before its
// handler ran.
type fastLane struct {
	// content is the report's digest without telemetry (reportDigest),
	// if the lane computed it (nil: not).
	content []byte
}

// laneContent returns the report digest the fast lane computed, or nil.
func laneContent(ctx context.Context) []byte {
	l, _ := ctx.Value(fastLaneKey{}).(fastLane)
	return l.content
}

func (ah *agentHandlers) countHeartbeat(ctx context.Context, store string) {
	if ah.heartbeats == nil {
		return
	}
	lane := "general"
	if ctx.Value(fastLaneKey{}) != nil {
		lane = "fast"
	}
	ah.heartbeats.WithLabelValues(lane, store).Inc()
}

// TelemetryEvery bounds the age of the telemetry in a node's stored report
// (round-trip times, losses, check times), which operators read on node
// reads and in the web console: the fast path skips storing reports that
// differ only in telemetry, so without a bound a steady node would show
// the RTTs and check times of its last real change for ever.
const TelemetryEvery = 5 * time.Second

// telemetryDigest appends to a report digest the node's current telemetry
// period, so a steady node's report is stored once per TelemetryEvery and
// its heartbeats in between take the fast path. Each node's periods are
// shifted by a phase taken from its id, so the nodes of a large cluster
// do not all store their reports at the same instant.
func telemetryDigest(d []byte, nodeID string, now time.Time) []byte {
	return binary.AppendVarint(slices.Clip(d), telemetryPeriod(nodeID, now))
}

// telemetryPeriod numbers nodeID's telemetry periods.
func telemetryPeriod(nodeID string, t time.Time) int64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(nodeID))
	phase := int64(f.Sum64() % uint64(TelemetryEvery))
	return (t.UnixNano() + phase) / int64(TelemetryEvery)
}

// storeTimeout bounds store work detached from its request.
const storeTimeout = 10 * time.Second

// reportsFailure tells whether a heartbeat reports a failed hierarchy,
// which RecordHeartbeat turns into a placement change.
func reportsFailure(b *api.AgentHeartbeatJSONRequestBody) bool {
	for _, h := range deref(b.Hierarchies, nil) {
		if h.State == api.PlacementStateFailed {
			return true
		}
	}
	return false
}

// reportDigest hashes what anything reads from a stored report: each
// hierarchy's id, epoch, state and detail; each resource's checks'
// presence and outcome and its restarts; each path's id, peer and state.
// Round-trip times, losses, failure counts, check times and details are
// telemetry and left out, so a steady node's reports share one digest.
// Order counts (the agent sorts its lists).
func reportDigest(b *api.AgentHeartbeatJSONRequestBody) []byte {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	check := func(c *api.CheckResult) {
		switch {
		case c == nil:
			buf = append(buf, 0)
		case c.Ok:
			buf = append(buf, 1)
		default:
			buf = append(buf, 2)
		}
	}
	buf = append(buf, "backstop-report-v1"...)
	for _, x := range deref(b.Hierarchies, nil) {
		buf = append(buf, 'h')
		buf = append(buf, x.HierarchyId[:]...)
		buf = binary.AppendVarint(buf, x.Epoch)
		str(string(x.State))
		str(deref(x.Detail, ""))
	}
	for _, x := range deref(b.Resources, nil) {
		buf = append(buf, 'r')
		buf = append(buf, x.HierarchyId[:]...)
		str(x.Resource)
		check(x.Quick)
		check(x.Deep)
		buf = binary.AppendVarint(buf, int64(deref(x.Restarts, 0)))
	}
	for _, x := range deref(b.Paths, nil) {
		buf = append(buf, 'p')
		buf = append(buf, x.PathId[:]...)
		buf = append(buf, x.PeerNodeId[:]...)
		str(string(x.State))
	}
	h.Write(buf)
	return h.Sum(nil)
}

// admit takes one of the slots heartbeats are served in (from their
// body's validation to their answer), before any work is done on them.
// When every slot is busy, a heartbeat whose node holds a lease with more
// than half its TTL to run is refused at once (503 with Retry-After): it
// loses nothing by being refused, and the work goes to those whose
// leases are closest to running out, which wait up to admitWait for a
// slot (an answer later than that is of little use: the agent's lease
// runs on its own clock). Queueing more than the server can do is what
// made the control plane collapse instead of saturating: every request
// got slow, the agents gave up on all of them, and the server went on
// serving requests nobody waited for.
func (ah *agentHandlers) admit(ctx context.Context, nodeID string, news func() bool) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the agent gave up already: don't start
	}
	select {
	case ah.slots <- struct{}{}:
		return ah.release, nil
	default:
	}
	// A comfortable lease is shed at once, unless its heartbeat says
	// something new (news, asked only now: it may read the body): a
	// path that went down (the evidence the failure detector waits for
	// to declare a peer down), a hierarchy's new state. Shedding those
	// delayed failovers under load by up to the reporter's lease.
	if ah.leases.comfortable(nodeID, time.Now()) && (news == nil || !news()) {
		return nil, errOverloaded
	}
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case ah.slots <- struct{}{}:
		return ah.release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errOverloaded
	}
}

func (ah *agentHandlers) release() { <-ah.slots }

// leaseBook remembers, for admit, until when this replica last granted
// each node a lease (by this process's clock). It only orders shedding:
// nothing about safety depends on it, and a node it does not know is
// treated as closest to expiry.
type leaseBook struct {
	// mu guards m.
	mu sync.Mutex
	m  map[string]leaseEntry
}

type leaseEntry struct {
	granted time.Time
	ttl     time.Duration
	// content is the digest (reportDigest) of the report the lease was
	// granted on.
	content []byte
}

func (b *leaseBook) note(nodeID string, at time.Time, ttl time.Duration, content []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]leaseEntry{}
	}
	b.m[nodeID] = leaseEntry{granted: at, ttl: ttl, content: content}
}

// says tells whether nodeID's last lease granted here was granted on a
// report with this content digest (a heartbeat that says nothing new).
func (b *leaseBook) says(nodeID string, content []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.m[nodeID]
	return ok && bytes.Equal(e.content, content)
}

// telemetryDue tells whether nodeID's last lease granted here is from an
// earlier telemetry period (or unknown): then the stored report is due to
// be replaced by this heartbeat's. Only a hint: a wrong guess costs the
// full heartbeat (the stored digest does not match) or a report sent for
// nothing.
func (b *leaseBook) telemetryDue(nodeID string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.m[nodeID]
	return !ok || telemetryPeriod(nodeID, e.granted) != telemetryPeriod(nodeID, now)
}

// comfortable tells whether nodeID's lease, granted here, has more than
// half its TTL to run.
func (b *leaseBook) comfortable(nodeID string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.m[nodeID]
	return ok && e.ttl > 0 && now.Before(e.granted.Add(e.ttl/2))
}

const (
	// agentSlots is how many heartbeats are served at once. A heartbeat
	// waiting for its group of renewals (store.RenewLease) holds a slot
	// but no connection, so the slots bound the group's size: with 32,
	// groups could not grow past ~16 while a slow group was written, and
	// at 1,000 agents on a loaded 2-core host 1,030 of 4,000 heartbeats/s
	// were answered (47,195 shed); with 256, 3,492 (5,630 shed, no lease
	// lapsed). 512 did worse at 2,000 agents (more timeouts).
	agentSlots = 256
	// admitWait is how long a heartbeat waits for a slot before it is
	// refused.
	admitWait = 250 * time.Millisecond
)

// AgentPollCommands returns the node's queued commands, waiting up to
// wait ms for one to be queued.
func (ah *agentHandlers) AgentPollCommands(ctx context.Context, r api.AgentPollCommandsRequestObject) (api.AgentPollCommandsResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	wait := time.Duration(deref(r.Params.Wait, 25000)) * time.Millisecond
	// Register before looking, so a command queued in between still wakes
	// this poll.
	wake, done := ah.waiters.add(a.NodeID)
	defer done()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Detached from the request, as heartbeats' store work: an
		// agent giving up must not cost a PostgreSQL connection.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		cmds, err := ah.store.NextCommands(sctx, a.NodeID)
		cancel()
		if err != nil {
			return nil, err
		}
		if len(cmds) > 0 || wait == 0 {
			out := api.AgentPollCommands200JSONResponse{Commands: make([]api.Envelope, len(cmds))}
			for i, c := range cmds {
				out.Commands[i] = api.Envelope{CommandId: apiID(c.ID), Payload: c.Payload, KeyId: c.KeyID, Signature: c.Signature}
			}
			return out, nil
		}
		if f := ah.pollWaiting.Load(); f != nil {
			(*f)(a.NodeID)
		}
		select {
		case <-wake:
		case <-timer.C:
			wait = 0 // one last look, then answer empty
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// AgentCommandResult records a command's outcome.
func (ah *agentHandlers) AgentCommandResult(ctx context.Context, r api.AgentCommandResultRequestObject) (api.AgentCommandResultResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	b := r.Body
	out := backstop.CommandOutcome{Status: string(b.Status), Reason: deref(b.Reason, ""), Detail: deref(b.Detail, "")}
	for _, step := range deref(b.Steps, nil) {
		out.Steps = append(out.Steps, backstop.StepResult{Resource: step.Resource, Action: string(step.Action), OK: step.Ok, Detail: deref(step.Detail, ""), DurationMS: deref(step.DurationMs, 0)})
	}
	if out.Status == backstop.CommandRejected && out.Reason == "" {
		return nil, backstop.Invalid("/reason", "a rejected command needs a reason code")
	}
	eff, err := ah.store.RecordCommandResult(ctx, a, r.CommandId.String(), out, ah.keys.Sign)
	if err != nil {
		return nil, err
	}
	if eff.Recovered != nil {
		ah.recovery.Observe(eff.Recovered.Seconds())
	}
	lvl := slog.LevelInfo
	if out.Status != backstop.CommandSucceeded {
		lvl = slog.LevelWarn
	}
	ah.log.Log(ctx, lvl, "command result", "node", a.NodeName, "command_id", r.CommandId.String(), "status", out.Status, "reason", out.Reason, "detail", out.Detail)
	return api.AgentCommandResult204Response{}, nil
}

// AgentConfig returns the node's desired configuration.
func (ah *agentHandlers) AgentConfig(ctx context.Context, _ api.AgentConfigRequestObject) (api.AgentConfigResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := ah.store.AgentConfig(ctx, a)
	if err != nil {
		return nil, err
	}
	out := api.AgentConfig200JSONResponse{
		Version: cfg.Version, ClusterId: apiID(cfg.Cluster.ID), NodeId: apiID(cfg.NodeID), Timing: toAPITiming(cfg.Cluster.Timing),
		Fencing: api.FencingPolicy(cfg.Cluster.Fencing), PathKey: cfg.PathKey,
		Hierarchies: make([]api.Hierarchy, len(cfg.Hierarchies)), Peers: make([]api.AgentPeer, len(cfg.Peers)),
		Paths: make([]api.Path, len(cfg.Paths)), SigningKeys: make([]api.SigningKey, len(cfg.SigningKeys)),
	}
	for i, h := range cfg.Hierarchies {
		out.Hierarchies[i] = toAPIHierarchy(h)
	}
	for i, p := range cfg.Peers {
		out.Peers[i] = api.AgentPeer{NodeId: apiID(p.ID), Name: p.Name}
	}
	for i, p := range cfg.Paths {
		out.Paths[i] = toAPIPath(p)
	}
	for i, k := range cfg.SigningKeys {
		out.SigningKeys[i] = toAPISigningKey(k)
	}
	return out, nil
}

// ListCommands lists a cluster's signed commands.
func (ah *agentHandlers) ListCommands(ctx context.Context, r api.ListCommandsRequestObject) (api.ListCommandsResponseObject, error) {
	node := ""
	if r.Params.NodeId != nil {
		node = r.Params.NodeId.String()
	}
	cs, next, err := ah.store.ListCommands(ctx, r.ClusterId.String(), node, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListCommands200JSONResponse{Items: make([]api.CommandInfo, len(cs)), NextCursor: nextCursor(next)}
	for i, c := range cs {
		out.Items[i] = api.CommandInfo{
			Id: apiID(c.ID), ClusterId: apiID(c.ClusterID), NodeId: apiID(c.NodeID), HierarchyId: apiID(c.HierarchyID),
			Action: api.CommandInfoAction(c.Action), Epoch: c.Epoch, Term: c.Term, KeyId: c.KeyID, Status: api.CommandStatus(c.Status),
			IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, CompletedAt: c.CompletedAt,
		}
		if c.RejectionReason != "" {
			out.Items[i].RejectionReason = ptr(c.RejectionReason)
		}
		if c.Detail != "" {
			out.Items[i].Detail = ptr(c.Detail)
		}
	}
	return out, nil
}

// ListSigningKeys lists the command-signing public keys.
func (ah *agentHandlers) ListSigningKeys(ctx context.Context, _ api.ListSigningKeysRequestObject) (api.ListSigningKeysResponseObject, error) {
	keys, err := ah.store.ListSigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := api.ListSigningKeys200JSONResponse{Items: make([]api.SigningKey, len(keys))}
	for i, k := range keys {
		out.Items[i] = toAPISigningKey(k.SigningKey)
	}
	return out, nil
}

// RotateSigningKey makes a new, endorsed signing key active.
func (ah *agentHandlers) RotateSigningKey(ctx context.Context, _ api.RotateSigningKeyRequestObject) (api.RotateSigningKeyResponseObject, error) {
	k, err := ah.keys.Rotate(ctx)
	if err != nil {
		return nil, err
	}
	return api.RotateSigningKey201JSONResponse(toAPISigningKey(k)), nil
}
