package nodeagent

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

// commandsLoop long-polls for commands, once the first heartbeat was
// acknowledged (before that the agent does not know whether the control
// plane counts on it), until ctx ends.
func (a *Agent) commandsLoop(ctx context.Context) {
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			return
		case <-a.firstAck:
			waiting = false
		case <-time.After(5 * time.Second):
			a.live.beat("commands")
		}
	}
	wait := int(a.cfg.pollWait / time.Millisecond)
	backoff := time.Duration(0)
	fails := 0
	for ctx.Err() == nil {
		a.live.beat("commands")
		resp, err := call(ctx, a.api, a.cfg.pollWait+15*time.Second, func(ctx context.Context, c *client.ClientWithResponses) (*client.AgentPollCommandsResponse, error) {
			return c.AgentPollCommandsWithResponse(ctx, &client.AgentPollCommandsParams{Wait: &wait})
		})
		if err == nil && (resp.StatusCode() != http.StatusOK || resp.JSON200 == nil) {
			err = unexpected(resp)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			backoff = min(max(2*backoff, 250*time.Millisecond), 5*time.Second)
			if fails == 1 || fails%20 == 0 {
				a.log.Warn("cannot poll for commands; retrying", keyErr, err, "consecutive_failures", fails,
					"retry_in_ms", backoff.Milliseconds())
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff, fails = 0, 0
		for _, e := range resp.JSON200.Commands {
			a.handleEnvelope(e)
		}
	}
}

// handleEnvelope verifies one delivered envelope; an accepted command is
// recorded durably, then queued for its hierarchy's worker; a refused
// one is reported with its reason.
func (a *Agent) handleEnvelope(e client.Envelope) {
	id := a.identity()
	v := envelope.Verifier{ClusterID: id.ClusterID, NodeID: id.NodeID, Keys: a.keys.snapshot(), Memory: a.mem}
	cmd, err := v.Verify(envelope.Envelope{Payload: e.Payload, KeyID: e.KeyId, Signature: e.Signature})
	if err == nil {
		// The envelope's command_id is not signed; it must name the
		// signed command, or results would be filed under another one.
		if u, perr := uuid.Parse(cmd.ID); perr != nil || u != e.CommandId {
			err = &envelope.Rejection{Reason: envelope.ReasonMalformed,
				Detail: fmt.Sprintf("envelope command_id %s does not match the signed command id %q", e.CommandId, cmd.ID)}
		}
	}
	if err != nil {
		reason := envelope.ReasonOf(err)
		if reason == "" {
			reason = envelope.ReasonMalformed
		}
		if reason == envelope.ReasonReplay && a.isInflight(e.CommandId) {
			// A redelivery of a command this process accepted and has not
			// reported yet: its real result is on its way, and a
			// rejection must not take its place.
			a.log.Info("command delivered again while it runs or its result is pending; ignored",
				keyEvent, eventCommandRejected, keyCommand, e.CommandId.String(), keyReason, string(reason), "ignored", true)
			return
		}
		detail := err.Error()
		var rej *envelope.Rejection
		if r, ok := err.(*envelope.Rejection); ok {
			rej = r
			detail = rej.Detail
		}
		a.met.commandsRejected.WithLabelValues(string(reason)).Inc()
		a.log.Warn("command rejected", keyEvent, eventCommandRejected, keyCommand, e.CommandId.String(),
			keyReason, string(reason), keyDetail, detail, keyKeyID, e.KeyId)
		r := string(reason)
		d := truncate(detail, maxDetail)
		a.results.add(e.CommandId, client.CommandResult{Status: client.CommandResultStatusRejected, Reason: &r, Detail: &d})
		return
	}
	log := a.log.With(keyCommand, cmd.ID, keyHierarchy, cmd.HierarchyID, keyAction, string(cmd.Action))
	if err := a.mem.Record(cmd); err != nil {
		log.Error("cannot record the accepted command durably; not executing it", keyErr, err)
		d := truncate("the agent could not record the command durably: "+err.Error(), maxDetail)
		a.results.add(e.CommandId, client.CommandResult{Status: client.CommandResultStatusFailed, Detail: &d})
		return
	}
	a.workersMu.Lock()
	a.inflight[e.CommandId] = true
	a.workersMu.Unlock()
	a.met.commandsAccepted.Inc()
	log.Info("command accepted", keyEvent, eventCommandAccepted, keyEpoch, cmd.Epoch, keyTerm, cmd.Term,
		keyHierarchyName, cmd.Hierarchy, "target", cmd.Target, "resources", len(cmd.Resources),
		"expires_in_ms", time.Until(cmd.ExpiresAt).Milliseconds())
	a.dispatch(cmd)
}

// dispatch queues cmd for its hierarchy's worker: commands of one
// hierarchy run one at a time and in order, those of different
// hierarchies concurrently.
func (a *Agent) dispatch(cmd *envelope.Command) {
	a.workersMu.Lock()
	ch, ok := a.workers[cmd.HierarchyID]
	if !ok {
		ch = make(chan *envelope.Command, 64)
		a.workers[cmd.HierarchyID] = ch
		a.workerWG.Add(1)
		go func() {
			defer a.workerWG.Done()
			for c := range ch {
				a.executeCommand(c)
			}
		}()
	}
	a.workersMu.Unlock()
	ch <- cmd
}

// executeCommand runs one accepted command and queues its result.
func (a *Agent) executeCommand(cmd *envelope.Command) {
	id, _ := uuid.Parse(cmd.ID) // checked against the envelope in handleEnvelope
	log := a.log.With(keyCommand, cmd.ID, keyHierarchy, cmd.HierarchyID, keyAction, string(cmd.Action))
	start := time.Now()
	var o outcome
	if refuse, reason := a.refuseNow(cmd); refuse != "" {
		o = outcome{Detail: refuse, Reason: reason}
	} else {
		o = a.runner.execute(cmd)
	}
	status := client.CommandResultStatusSucceeded
	if !o.OK {
		status = client.CommandResultStatusFailed
	}
	a.met.commandResults.WithLabelValues(string(cmd.Action), string(status)).Inc()
	lvl := log.Info
	if !o.OK {
		lvl = log.Warn
	}
	lvl("command done", keyEvent, eventCommandDone, "status", string(status), keyEpoch, cmd.Epoch,
		keyDurationMS, time.Since(start).Milliseconds(), "steps", len(o.Steps), keyDetail, o.Detail)
	a.results.add(id, resultOf(status, o))
}

// refuseNow re-checks, when a queued command's turn comes, what may have
// changed since it was verified: a newer epoch for the hierarchy, expiry,
// and (to bring something in service) that this node is not isolated
// without a lease. It returns the refusal ("" for none) and, for an
// isolated node, the reason code backstop.FailedIsolated.
func (a *Agent) refuseNow(cmd *envelope.Command) (refusal, reason string) {
	if newest := a.mem.epochOf(cmd.HierarchyID); newest > cmd.Epoch {
		return fmt.Sprintf("superseded: a command of epoch %d for this hierarchy arrived while this one (epoch %d) waited", newest, cmd.Epoch), ""
	}
	if cmd.Action != envelope.BringInService {
		return "", ""
	}
	now := time.Now()
	if !now.Before(cmd.ExpiresAt) {
		return fmt.Sprintf("expired at %s while waiting for an earlier command of the hierarchy", cmd.ExpiresAt.Format(time.RFC3339Nano)), ""
	}
	if iso, v, n := a.isolated(now); iso {
		return fmt.Sprintf("refusing to bring anything in service: the lease has expired and only %d of %d nodes are visible", v, n), backstop.FailedIsolated
	}
	return "", ""
}

// resultOf converts an outcome to the contract's CommandResult.
func resultOf(status client.CommandResultStatus, o outcome) client.CommandResult {
	r := client.CommandResult{Status: status}
	if o.Reason != "" {
		reason := o.Reason
		r.Reason = &reason
	}
	if o.Detail != "" {
		d := truncate(o.Detail, maxDetail)
		r.Detail = &d
	}
	steps := make([]client.StepResult, 0, len(o.Steps))
	for _, s := range o.Steps {
		if len(steps) == 256 {
			break
		}
		dur := s.Duration.Milliseconds()
		sr := client.StepResult{Resource: truncate(s.Resource, 63), Action: client.StepResultAction(s.Action), Ok: s.OK, DurationMs: &dur}
		if s.Detail != "" {
			d := truncate(s.Detail, maxDetail)
			sr.Detail = &d
		}
		steps = append(steps, sr)
	}
	r.Steps = &steps
	return r
}

// isInflight reports whether id was accepted by this process and its
// result is not yet with the control plane.
func (a *Agent) isInflight(id uuid.UUID) bool {
	a.workersMu.Lock()
	defer a.workersMu.Unlock()
	return a.inflight[id]
}
