package nodeagent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/client"
)

// fenceQueue holds the self-fencings not yet acknowledged by the control
// plane, persisted so that a restart after fencing still reports it.
type fenceQueue struct {
	path string
	log  *slog.Logger
	// mu guards items.
	mu    sync.Mutex
	items []client.FenceReport
}

// maxFences is the contract's bound on fences per heartbeat, and on what
// the queue keeps.
const maxFences = 64

func loadFenceQueue(dir string, log *slog.Logger) (*fenceQueue, error) {
	q := &fenceQueue{path: filepath.Join(dir, fileFences), log: log}
	if _, err := loadJSON(q.path, &q.items); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *fenceQueue) add(r client.FenceReport) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, r)
	if len(q.items) > maxFences {
		q.items = q.items[len(q.items)-maxFences:]
	}
	if err := saveJSON(q.path, q.items); err != nil {
		q.log.Error("cannot persist the fence report", keyErr, err)
	}
}

// pending returns the reports to send (oldest first).
func (q *fenceQueue) pending() []client.FenceReport {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]client.FenceReport(nil), q.items...)
}

// ack drops the n oldest reports, which a heartbeat answer acknowledged.
func (q *fenceQueue) ack(n int) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.items))
	q.items = append([]client.FenceReport(nil), q.items[n:]...)
	if err := saveJSON(q.path, q.items); err != nil {
		q.log.Error("cannot persist the fence reports", keyErr, err)
	}
}

// pendingResult is a command result waiting to be reported.
type pendingResult struct {
	CommandID uuid.UUID            `json:"command_id"`
	Result    client.CommandResult `json:"result"`
	QueuedAt  time.Time            `json:"queued_at"`
}

// maxResults bounds the results kept while the control plane is away.
const maxResults = 1000

// reporter sends command results to the control plane, retrying until
// each is recorded: results are persisted, so a restart resumes them.
type reporter struct {
	path string
	api  *apiClient
	log  *slog.Logger
	wake chan struct{}
	// onDone, if set, is called when the control plane has a command's
	// result (or refused it for good).
	onDone func(uuid.UUID)
	// mu guards items.
	mu    sync.Mutex
	items []pendingResult
}

func loadReporter(dir string, api *apiClient, log *slog.Logger) (*reporter, error) {
	r := &reporter{path: filepath.Join(dir, fileResults), api: api, log: log, wake: make(chan struct{}, 1)}
	if _, err := loadJSON(r.path, &r.items); err != nil {
		return nil, err
	}
	return r, nil
}

// add queues a result and wakes the sender.
func (r *reporter) add(id uuid.UUID, res client.CommandResult) {
	r.mu.Lock()
	r.items = append(r.items, pendingResult{CommandID: id, Result: res, QueuedAt: time.Now()})
	if len(r.items) > maxResults {
		r.log.Error("too many unreported command results; dropping the oldest", "dropped", r.items[0].CommandID.String())
		r.items = r.items[len(r.items)-maxResults:]
	}
	r.saveLocked()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) saveLocked() {
	if err := saveJSON(r.path, r.items); err != nil {
		r.log.Error("cannot persist the pending command results", keyErr, err)
	}
}

func (r *reporter) first() (pendingResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.items) == 0 {
		return pendingResult{}, false
	}
	return r.items[0], true
}

func (r *reporter) drop(id uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, it := range r.items {
		if it.CommandID == id {
			r.items = append(r.items[:i:i], r.items[i+1:]...)
			break
		}
	}
	r.saveLocked()
}

// run sends queued results, oldest first, with a backoff while the
// control plane does not take them, until ctx ends.
func (r *reporter) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		it, ok := r.first()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
				continue
			}
		}
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		err := r.send(ctx, it)
		if err == nil || !retryable(err) {
			r.drop(it.CommandID)
			if r.onDone != nil {
				r.onDone(it.CommandID)
			}
			var se *statusError
			switch {
			case errors.As(err, &se) && se.Status == http.StatusConflict:
				// At-least-once delivery: an earlier attempt got through
				// (or this is a replay of a command already reported).
				r.log.Info("the control plane already has a result for this command", keyEvent, eventResultReported,
					keyCommand, it.CommandID.String(), "status", string(it.Result.Status), "ok", false, keyErr, err)
			case err != nil:
				r.log.Error("the control plane refused a command result; dropping it", keyEvent, eventResultReported,
					keyCommand, it.CommandID.String(), "ok", false, keyErr, err)
			default:
				r.log.Info("command result reported", keyEvent, eventResultReported, keyCommand, it.CommandID.String(),
					"status", string(it.Result.Status), "ok", true)
			}
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, 250*time.Millisecond), 5*time.Second)
		r.log.Warn("cannot report a command result yet; retrying", keyCommand, it.CommandID.String(),
			keyErr, err, "retry_in_ms", backoff.Milliseconds())
	}
}

func (r *reporter) send(ctx context.Context, it pendingResult) error {
	resp, err := call(ctx, r.api, 10*time.Second, func(ctx context.Context, c *client.ClientWithResponses) (*client.AgentCommandResultResponse, error) {
		return c.AgentCommandResultWithResponse(ctx, it.CommandID, it.Result)
	})
	if err != nil {
		return err
	}
	if resp.StatusCode()/100 == 2 {
		return nil
	}
	return unexpected(resp)
}

// retryable reports whether a failed call may succeed later: transport
// errors, 5xx, 401 (a credential store that is catching up), 408 and 429.
// Other 4xx answers will never change.
func retryable(err error) bool {
	var se *statusError
	if !errors.As(err, &se) {
		return true
	}
	switch se.Status {
	case http.StatusUnauthorized, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	}
	return se.Status >= 500
}
