package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

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

// Run runs the server's background work until ctx ends: the listener that
// wakes long polls for commands queued on any replica, and the sweeper
// that closes commands no agent will run.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			err := s.store.ListenCommands(ctx, s.waiters.wake)
			if ctx.Err() != nil {
				return
			}
			s.log.WarnContext(ctx, "command listener stopped; restarting", "err", err)
			// Wake everyone so no poll waits on a missed notification.
			s.waiters.mu.Lock()
			for id := range s.waiters.m {
				for ch := range s.waiters.m[id] {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
			s.waiters.mu.Unlock()
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
			if n, err := s.store.ExpireCommands(ctx, 60*time.Second); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "expire commands", "err", err)
			} else if n > 0 {
				s.log.WarnContext(ctx, "closed commands no agent ran", "count", n)
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
func (s *Server) AgentEnroll(ctx context.Context, r api.AgentEnrollRequestObject) (api.AgentEnrollResponseObject, error) {
	b := r.Body
	if len(b.PublicKey) != 32 {
		return nil, backstop.Invalid("/public_key", "must be a 32-byte Ed25519 public key, base64-encoded (got %d bytes)", len(b.PublicKey))
	}
	facts := backstop.HostFacts{Hostname: b.Facts.Hostname, OS: b.Facts.Os, Kernel: deref(b.Facts.Kernel, ""), Arch: b.Facts.Arch, AgentVersion: b.Facts.AgentVersion}
	for _, i := range deref(b.Facts.Interfaces, nil) {
		facts.Interfaces = append(facts.Interfaces, backstop.HostInterface{Name: i.Name, MAC: deref(i.Mac, ""), Addresses: deref(i.Addresses, nil)})
	}
	n, credential, err := s.store.Enroll(ctx, b.EnrollmentToken, b.PublicKey, facts)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.ListSigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := api.AgentEnroll201JSONResponse{NodeId: apiID(n.ID), ClusterId: apiID(n.ClusterID), NodeName: n.Name, Credential: credential, SigningKeys: []api.SigningKey{}}
	for _, k := range keys {
		out.SigningKeys = append(out.SigningKeys, toAPISigningKey(k.SigningKey))
	}
	s.log.InfoContext(ctx, "agent enrolled", "node_id", n.ID, "node", n.Name, "hostname", facts.Hostname)
	return out, nil
}

// AgentHeartbeat renews the node lease and records its report.
func (s *Server) AgentHeartbeat(ctx context.Context, r api.AgentHeartbeatRequestObject) (api.AgentHeartbeatResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(r.Body)
	if err != nil {
		return nil, err
	}
	rep := backstop.AgentReport{ConfigVersion: r.Body.ConfigVersion, Raw: raw}
	if ms := deref(r.Body.RestartHoldMs, 0); ms < 0 || time.Duration(ms)*time.Millisecond > backstop.MaxRestartHold {
		return nil, backstop.Invalid("/restart_hold_ms", "must be between 0 and %d ms (got %d)", backstop.MaxRestartHold.Milliseconds(), ms)
	} else if ms > 0 {
		rep.RestartHold = time.Duration(ms) * time.Millisecond
		s.log.InfoContext(ctx, "agent announces a restart", "node_id", a.NodeID, "node", a.NodeName, "restart_hold_ms", ms)
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
		s.log.WarnContext(ctx, "agent reports it fenced itself", "node_id", a.NodeID, "node", a.NodeName, "at", f.At, "reason", f.Reason)
	}
	ack, err := s.store.RecordHeartbeat(ctx, a, rep)
	if err != nil {
		return nil, err
	}
	return api.AgentHeartbeat200JSONResponse{LeaseTtlMs: int(ack.LeaseTTL.Milliseconds()), Term: ack.Term, ConfigVersion: ack.ConfigVersion}, nil
}

// AgentPollCommands returns the node's queued commands, waiting up to
// wait ms for one to be queued.
func (s *Server) AgentPollCommands(ctx context.Context, r api.AgentPollCommandsRequestObject) (api.AgentPollCommandsResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	wait := time.Duration(deref(r.Params.Wait, 25000)) * time.Millisecond
	// Register before looking, so a command queued in between still wakes
	// this poll.
	wake, done := s.waiters.add(a.NodeID)
	defer done()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		cmds, err := s.store.NextCommands(ctx, a.NodeID)
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
func (s *Server) AgentCommandResult(ctx context.Context, r api.AgentCommandResultRequestObject) (api.AgentCommandResultResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	b := r.Body
	out := backstop.CommandOutcome{Status: string(b.Status), Reason: deref(b.Reason, ""), Detail: deref(b.Detail, "")}
	for _, st := range deref(b.Steps, nil) {
		out.Steps = append(out.Steps, backstop.StepResult{Resource: st.Resource, Action: string(st.Action), OK: st.Ok, Detail: deref(st.Detail, ""), DurationMS: deref(st.DurationMs, 0)})
	}
	if out.Status == backstop.CommandRejected && out.Reason == "" {
		return nil, backstop.Invalid("/reason", "a rejected command needs a reason code")
	}
	eff, err := s.store.RecordCommandResult(ctx, a, r.CommandId.String(), out)
	if err != nil {
		return nil, err
	}
	if eff.Recovered != nil {
		s.metrics.recovery.Observe(eff.Recovered.Seconds())
	}
	lvl := slog.LevelInfo
	if out.Status != backstop.CommandSucceeded {
		lvl = slog.LevelWarn
	}
	s.log.Log(ctx, lvl, "command result", "node", a.NodeName, "command_id", r.CommandId.String(), "status", out.Status, "reason", out.Reason, "detail", out.Detail)
	return api.AgentCommandResult204Response{}, nil
}

// AgentConfig returns the node's desired configuration.
func (s *Server) AgentConfig(ctx context.Context, _ api.AgentConfigRequestObject) (api.AgentConfigResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := s.store.AgentConfig(ctx, a)
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

// BringHierarchyInService places a hierarchy on a node by hand.
func (s *Server) BringHierarchyInService(ctx context.Context, r api.BringHierarchyInServiceRequestObject) (api.BringHierarchyInServiceResponseObject, error) {
	op, err := s.store.PlaceHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), backstop.OperationInService, r.Body.NodeId.String(), s.keys.Sign)
	if err != nil {
		return nil, err
	}
	s.waiters.wake(op.NodeID) // this replica at once; others through NOTIFY
	return api.BringHierarchyInService202JSONResponse{Body: toAPIOperation(op), Headers: api.BringHierarchyInService202ResponseHeaders{Location: location("/v1/operations/%s", op.ID)}}, nil
}

// TakeHierarchyOutOfService takes a hierarchy out of service by hand.
func (s *Server) TakeHierarchyOutOfService(ctx context.Context, r api.TakeHierarchyOutOfServiceRequestObject) (api.TakeHierarchyOutOfServiceResponseObject, error) {
	op, err := s.store.PlaceHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), backstop.OperationOutOfService, "", s.keys.Sign)
	if err != nil {
		return nil, err
	}
	s.waiters.wake(op.NodeID)
	return api.TakeHierarchyOutOfService202JSONResponse{Body: toAPIOperation(op), Headers: api.TakeHierarchyOutOfService202ResponseHeaders{Location: location("/v1/operations/%s", op.ID)}}, nil
}

// GetOperation returns an operation.
func (s *Server) GetOperation(ctx context.Context, r api.GetOperationRequestObject) (api.GetOperationResponseObject, error) {
	op, err := s.store.FindOperation(ctx, r.OperationId.String())
	if err != nil {
		return nil, err
	}
	return api.GetOperation200JSONResponse(toAPIOperation(op)), nil
}

// ListCommands lists a cluster's signed commands.
func (s *Server) ListCommands(ctx context.Context, r api.ListCommandsRequestObject) (api.ListCommandsResponseObject, error) {
	node := ""
	if r.Params.NodeId != nil {
		node = r.Params.NodeId.String()
	}
	cs, next, err := s.store.ListCommands(ctx, r.ClusterId.String(), node, page(r.Params.Limit, r.Params.Cursor))
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
func (s *Server) ListSigningKeys(ctx context.Context, _ api.ListSigningKeysRequestObject) (api.ListSigningKeysResponseObject, error) {
	keys, err := s.store.ListSigningKeys(ctx)
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
func (s *Server) RotateSigningKey(ctx context.Context, _ api.RotateSigningKeyRequestObject) (api.RotateSigningKeyResponseObject, error) {
	k, err := s.keys.Rotate(ctx)
	if err != nil {
		return nil, err
	}
	return api.RotateSigningKey201JSONResponse(toAPISigningKey(k)), nil
}

func toAPIOperation(o backstop.Operation) api.Operation {
	out := api.Operation{
		Id: apiID(o.ID), ClusterId: apiID(o.ClusterID), HierarchyId: apiID(o.HierarchyID), NodeId: apiID(o.NodeID),
		Kind: api.OperationKind(o.Kind), State: api.OperationState(o.State), Epoch: o.Epoch, CommandId: optID(o.CommandID),
		Steps: make([]api.StepResult, len(o.Steps)), CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
	if o.Detail != "" {
		out.Detail = ptr(o.Detail)
	}
	for i, st := range o.Steps {
		out.Steps[i] = api.StepResult{Resource: st.Resource, Action: api.StepResultAction(st.Action), Ok: st.OK, DurationMs: ptr(st.DurationMS)}
		if st.Detail != "" {
			out.Steps[i].Detail = ptr(st.Detail)
		}
	}
	return out
}

var errNoKeyring = errors.New("server: Keyring is required")
