package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// eventHandlers serve the event log, as pages and as a Server-Sent
// Events stream, and count committed events.
type eventHandlers struct {
	store eventStore
	log   *slog.Logger
	hub   eventHub
	// heartbeat and poll are the stream's heartbeat interval and the
	// interval of its fallback reads of the log.
	heartbeat, poll time.Duration
	// events counts committed events by type and severity.
	events *prometheus.CounterVec
	// onChange is Config.OnChange.
	onChange func(clusterID string)
}

// eventStore is what eventHandlers read.
type eventStore interface {
	EventStore
	ClusterFinder
}

// ListEvents reads a cluster's event log.
func (eh *eventHandlers) ListEvents(ctx context.Context, r api.ListEventsRequestObject) (api.ListEventsResponseObject, error) {
	after := deref(r.Params.After, 0)
	sev := ""
	if r.Params.Severity != nil {
		sev = string(*r.Params.Severity)
	}
	evs, err := eh.store.ListEvents(ctx, backstop.EventFilter{ClusterID: r.ClusterId.String(), After: after, Type: deref(r.Params.Type, ""),
		MinSeverity: sev, Limit: deref(r.Params.Limit, 100)})
	if err != nil {
		return nil, err
	}
	out := api.ListEvents200JSONResponse{Items: make([]api.Event, len(evs)), LastSeq: after}
	for i, e := range evs {
		out.Items[i] = toAPIEvent(e)
		out.LastSeq = e.Seq
	}
	return out, nil
}

// eventHub wakes the event streams of a cluster when one of its events
// commits (any replica's: the store's LISTEN/NOTIFY tells).
type eventHub struct {
	// mu guards the fields below.
	mu     sync.Mutex
	subs   map[string]map[chan struct{}]struct{}
	closed chan struct{} // closed by CloseStreams
}

func (h *eventHub) done() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed == nil {
		h.closed = make(chan struct{})
	}
	return h.closed
}

// CloseStreams ends every event stream (they never go idle by
// themselves): backstopd calls it when it shuts down, through
// http.Server.RegisterOnShutdown. Clients reconnect, to another replica,
// with Last-Event-ID.
func (eh *eventHandlers) CloseStreams() {
	done := eh.hub.done()
	eh.hub.mu.Lock()
	defer eh.hub.mu.Unlock()
	select {
	case <-done:
	default:
		close(eh.hub.closed)
	}
}

func (h *eventHub) subscribe(clusterID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = map[string]map[chan struct{}]struct{}{}
	}
	if h.subs[clusterID] == nil {
		h.subs[clusterID] = map[chan struct{}]struct{}{}
	}
	h.subs[clusterID][ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[clusterID], ch)
		if len(h.subs[clusterID]) == 0 {
			delete(h.subs, clusterID)
		}
	}
}

// publish wakes the streams of a cluster ("" for every cluster).
func (h *eventHub) publish(clusterID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, chs := range h.subs {
		if clusterID != "" && id != clusterID {
			continue
		}
		for ch := range chs {
			select {
			case ch <- struct{}{}:
			default: // already woken
			}
		}
	}
}

// RunEvents listens for committed events until ctx ends: it wakes the
// cluster's event streams and counts events. When the listener fails it
// restarts, and wakes every stream, which then reads the log: a lost
// notification delays an event by at most the streams' poll interval.
func (eh *eventHandlers) RunEvents(ctx context.Context) {
	for ctx.Err() == nil {
		err := eh.store.ListenEvents(ctx, func(e backstop.EventSignal) {
			eh.events.WithLabelValues(e.Type, e.Severity).Inc()
			eh.hub.publish(e.ClusterID)
			if eh.onChange != nil {
				eh.onChange(e.ClusterID)
			}
		})
		if ctx.Err() != nil {
			return
		}
		eh.log.WarnContext(ctx, "event listener stopped; restarting", "err", err)
		eh.hub.publish("")
		if eh.onChange != nil {
			eh.onChange("") // events may be missed until it listens again
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func toAPIEvent(e backstop.Event) api.Event {
	return api.Event{Seq: e.Seq, Id: apiID(e.ID), ClusterId: apiID(e.ClusterID), Type: e.Type, Severity: api.Severity(e.Severity),
		Message: e.Message, Subject: e.Subject, Details: e.Details, At: e.At}
}

// StreamEvents serves the event log as Server-Sent Events.
func (eh *eventHandlers) StreamEvents(ctx context.Context, r api.StreamEventsRequestObject) (api.StreamEventsResponseObject, error) {
	after := deref(r.Params.After, 0)
	if h := r.Params.LastEventID; h != nil {
		n, err := strconv.ParseInt(*h, 10, 64)
		if err != nil {
			return nil, backstop.Invalid("header.Last-Event-ID", "not an event seq: %q", *h)
		}
		after = n
	}
	cid := r.ClusterId.String()
	if _, err := eh.store.FindClusterByID(ctx, cid); err != nil {
		return nil, err
	}
	sev := ""
	if r.Params.Severity != nil {
		sev = string(*r.Params.Severity)
	}
	return &eventStream{handlers: eh, ctx: ctx, clusterID: cid, after: after, typ: deref(r.Params.Type, ""), severity: sev}, nil
}

// eventStream writes the SSE response itself: the generated response
// type would copy from a reader, and this one must also lift the
// server's read and write deadlines (a stream outlives them) and flush
// after every batch.
type eventStream struct {
	handlers      *eventHandlers
	ctx           context.Context
	clusterID     string
	after         int64
	typ, severity string
}

// streamBatch is how many events one read of the log takes.
const streamBatch = 500

// VisitStreamEventsResponse streams until the client goes away, the
// server shuts down or the cluster is deleted.
func (e *eventStream) VisitStreamEventsResponse(w http.ResponseWriter) error {
	eh, ctx := e.handlers, e.ctx
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
	wake, stop := eh.hub.subscribe(e.clusterID)
	defer stop()
	closing := eh.hub.done()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: 2000\n\n"); err != nil {
		return nil
	}
	heartbeat := time.NewTicker(eh.heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(eh.poll)
	defer poll.Stop()
	for {
		evs, err := eh.store.ListEvents(ctx, backstop.EventFilter{ClusterID: e.clusterID, After: e.after, Type: e.typ, MinSeverity: e.severity, Limit: streamBatch})
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, backstop.ErrNotFound) {
				eh.log.WarnContext(ctx, "event stream: read the log", "err", err, "cluster_id", e.clusterID)
			}
			return nil // the client reconnects (or gets the 404) with Last-Event-ID
		}
		for _, ev := range evs {
			b, err := json.Marshal(toAPIEvent(ev))
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", ev.Seq, b); err != nil {
				return nil
			}
			e.after = ev.Seq
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		if len(evs) == streamBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-closing:
			return nil
		case <-wake:
		case <-poll.C:
		case <-heartbeat.C:
			if _, err := fmt.Fprintf(w, ": heartbeat\n\n"); err != nil {
				return nil
			}
		}
	}
}
