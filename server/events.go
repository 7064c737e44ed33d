package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
)

// The event stream, webhook subscriptions and SNMP targets.

// Deliverer is what the API needs from event delivery (package notify).
type Deliverer interface {
	// Seal seals a target's secret, bound to its id; Open unseals it.
	Seal(targetID string, plain []byte) []byte
	Open(targetID string, sealed []byte) ([]byte, error)
	// Ping and TestTrap send once, now, and return the recorded delivery.
	Ping(ctx context.Context, t backstop.Target) (backstop.Delivery, error)
	TestTrap(ctx context.Context, t backstop.Target) (backstop.Delivery, error)
}

var errNoDeliverer = errors.New("server: no Deliverer configured")

func (s *Server) deliverer() (Deliverer, error) {
	if s.deliver == nil {
		return nil, errNoDeliverer
	}
	return s.deliver, nil
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
func (s *Server) CloseStreams() {
	done := s.hub.done()
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	select {
	case <-done:
	default:
		close(s.hub.closed)
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
func (s *Server) RunEvents(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.store.ListenEvents(ctx, func(e backstop.EventSignal) {
			s.events.WithLabelValues(e.Type, e.Severity).Inc()
			s.hub.publish(e.ClusterID)
		})
		if ctx.Err() != nil {
			return
		}
		s.log.WarnContext(ctx, "event listener stopped; restarting", "err", err)
		s.hub.publish("")
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
func (s *Server) StreamEvents(ctx context.Context, r api.StreamEventsRequestObject) (api.StreamEventsResponseObject, error) {
	after := deref(r.Params.After, 0)
	if h := r.Params.LastEventID; h != nil {
		n, err := strconv.ParseInt(*h, 10, 64)
		if err != nil {
			return nil, backstop.Invalid("header.Last-Event-ID", "not an event seq: %q", *h)
		}
		after = n
	}
	cid := r.ClusterId.String()
	if _, err := s.store.FindClusterByID(ctx, cid); err != nil {
		return nil, err
	}
	sev := ""
	if r.Params.Severity != nil {
		sev = string(*r.Params.Severity)
	}
	return &eventStream{s: s, ctx: ctx, clusterID: cid, after: after, typ: deref(r.Params.Type, ""), severity: sev}, nil
}

// eventStream writes the SSE response itself: the generated response
// type would copy from a reader, and this one must also lift the
// server's read and write deadlines (a stream outlives them) and flush
// after every batch.
type eventStream struct {
	s             *Server
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
	s, ctx := e.s, e.ctx
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
	wake, stop := s.hub.subscribe(e.clusterID)
	defer stop()
	closing := s.hub.done()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: 2000\n\n"); err != nil {
		return nil
	}
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(s.poll)
	defer poll.Stop()
	for {
		evs, err := s.store.ListEvents(ctx, e.clusterID, e.after, e.typ, e.severity, streamBatch)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, backstop.ErrNotFound) {
				s.log.WarnContext(ctx, "event stream: read the log", "err", err, "cluster_id", e.clusterID)
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

// Webhooks.

// validateFilter checks filters and that the clusters named exist.
func (s *Server) validateFilter(ctx context.Context, f backstop.TargetFilter) error {
	v := &backstop.ValidationError{}
	f.Validate(v, "")
	for i, id := range f.ClusterIDs {
		if _, err := s.store.FindClusterByID(ctx, id); errors.Is(err, backstop.ErrNotFound) {
			v.Add(fmt.Sprintf("/cluster_ids/%d", i), "cluster %s does not exist", id)
		} else if err != nil {
			return err
		}
	}
	return v.Err()
}

func validWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return backstop.Invalid("/url", "%q is not an absolute http or https URL", raw)
	}
	return nil
}

func uuidStrings(ids *[]uuid.UUID) []string {
	if ids == nil {
		return nil
	}
	out := make([]string, len(*ids))
	for i, id := range *ids {
		out[i] = id.String()
	}
	return out
}

func apiUUIDs(ids []string) []uuid.UUID {
	out := make([]uuid.UUID, len(ids))
	for i, id := range ids {
		out[i] = apiID(id)
	}
	return out
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func toAPIWebhook(t backstop.Target) api.Webhook {
	w := api.Webhook{Id: apiID(t.ID), Name: t.Name, Url: t.Webhook.URL, Enabled: t.Enabled, EventTypes: nonNilStrings(t.Filter.EventTypes),
		MinSeverity: api.Severity(t.Filter.MinSeverity), ClusterIds: apiUUIDs(t.Filter.ClusterIDs), SecretPrefix: t.Webhook.SecretPrefix,
		Version: t.Version, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
	if t.Description != "" {
		w.Description = ptr(t.Description)
	}
	return w
}

// CreateWebhook subscribes a receiver; the secret is in this answer only.
func (s *Server) CreateWebhook(ctx context.Context, r api.CreateWebhookRequestObject) (api.CreateWebhookResponseObject, error) {
	d, err := s.deliverer()
	if err != nil {
		return nil, err
	}
	b := r.Body
	if err := validWebhookURL(b.Url); err != nil {
		return nil, err
	}
	f := backstop.TargetFilter{EventTypes: deref(b.EventTypes, nil), MinSeverity: string(deref(b.MinSeverity, api.Severity(backstop.SeverityInfo))),
		ClusterIDs: uuidStrings(b.ClusterIds)}
	if err := s.validateFilter(ctx, f); err != nil {
		return nil, err
	}
	secret := backstop.NewWebhookSecret()
	id := uuid.Must(uuid.NewV7()).String()
	t, err := s.store.CreateTarget(ctx, backstop.Target{ID: id, Kind: backstop.TargetWebhook, Name: deref(b.Name, ""), Description: deref(b.Description, ""),
		Enabled: deref(b.Enabled, true), Filter: f, Webhook: &backstop.WebhookConfig{URL: b.Url, SecretPrefix: secret[:10]},
		Secret: d.Seal(id, []byte(secret))})
	if err != nil {
		return nil, err
	}
	w := toAPIWebhook(t)
	return api.CreateWebhook201JSONResponse{
		Body: api.WebhookCreated{Id: w.Id, Name: w.Name, Description: w.Description, Url: w.Url, Enabled: w.Enabled, EventTypes: w.EventTypes,
			MinSeverity: w.MinSeverity, ClusterIds: w.ClusterIds, SecretPrefix: w.SecretPrefix, Version: w.Version, CreatedAt: w.CreatedAt,
			UpdatedAt: w.UpdatedAt, Secret: secret},
		Headers: api.CreateWebhook201ResponseHeaders{ETag: etag(t.Version), Location: location("/v1/webhooks/%s", t.ID)},
	}, nil
}

// ListWebhooks lists webhooks.
func (s *Server) ListWebhooks(ctx context.Context, r api.ListWebhooksRequestObject) (api.ListWebhooksResponseObject, error) {
	ts, next, err := s.store.ListTargets(ctx, backstop.TargetWebhook, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListWebhooks200JSONResponse{Items: make([]api.Webhook, len(ts)), NextCursor: nextCursor(next)}
	for i, t := range ts {
		out.Items[i] = toAPIWebhook(t)
	}
	return out, nil
}

// GetWebhook returns a webhook.
func (s *Server) GetWebhook(ctx context.Context, r api.GetWebhookRequestObject) (api.GetWebhookResponseObject, error) {
	t, err := s.store.FindTarget(ctx, backstop.TargetWebhook, r.WebhookId.String())
	if err != nil {
		return nil, err
	}
	return api.GetWebhook200JSONResponse{Body: toAPIWebhook(t), Headers: api.GetWebhook200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// patchFilter applies filter fields of a PATCH.
func patchFilter(f backstop.TargetFilter, types *[]string, sev *api.Severity, clusters *[]uuid.UUID) backstop.TargetFilter {
	if types != nil {
		f.EventTypes = *types
	}
	if sev != nil {
		f.MinSeverity = string(*sev)
	}
	if clusters != nil {
		f.ClusterIDs = uuidStrings(clusters)
	}
	return f
}

// UpdateWebhook changes a webhook.
func (s *Server) UpdateWebhook(ctx context.Context, r api.UpdateWebhookRequestObject) (api.UpdateWebhookResponseObject, error) {
	b := r.Body
	if b.Url != nil {
		if err := validWebhookURL(*b.Url); err != nil {
			return nil, err
		}
	}
	f := patchFilter(backstop.TargetFilter{}, b.EventTypes, nil, b.ClusterIds)
	if err := s.validateFilter(ctx, f); err != nil {
		return nil, err
	}
	t, err := s.store.UpdateTarget(ctx, backstop.TargetWebhook, r.WebhookId.String(), ifMatchVersion(r.Params.IfMatch), func(t backstop.Target) (backstop.Target, error) {
		t.Name, t.Description, t.Enabled = deref(b.Name, t.Name), deref(b.Description, t.Description), deref(b.Enabled, t.Enabled)
		t.Filter = patchFilter(t.Filter, b.EventTypes, b.MinSeverity, b.ClusterIds)
		if b.Url != nil {
			c := *t.Webhook
			c.URL = *b.Url
			t.Webhook = &c
		}
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return api.UpdateWebhook200JSONResponse{Body: toAPIWebhook(t), Headers: api.UpdateWebhook200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// DeleteWebhook deletes a webhook.
func (s *Server) DeleteWebhook(ctx context.Context, r api.DeleteWebhookRequestObject) (api.DeleteWebhookResponseObject, error) {
	if err := s.store.DeleteTarget(ctx, backstop.TargetWebhook, r.WebhookId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteWebhook204Response{}, nil
}

// PingWebhook sends a ping now.
func (s *Server) PingWebhook(ctx context.Context, r api.PingWebhookRequestObject) (api.PingWebhookResponseObject, error) {
	dl, err := s.deliverer()
	if err != nil {
		return nil, err
	}
	t, err := s.store.FindTarget(ctx, backstop.TargetWebhook, r.WebhookId.String())
	if err != nil {
		return nil, err
	}
	d, err := dl.Ping(ctx, t)
	if err != nil {
		return nil, err
	}
	return api.PingWebhook200JSONResponse(toAPIDelivery(d)), nil
}

func toAPIDelivery(d backstop.Delivery) api.Delivery {
	out := api.Delivery{Id: apiID(d.ID), TargetId: apiID(d.TargetID), Kind: api.DeliveryKind(d.Kind), EventId: apiID(d.EventID), EventType: d.EventType,
		Status: api.DeliveryStatus(d.Status), Attempts: d.Attempts, CreatedAt: d.CreatedAt, FinishedAt: d.FinishedAt, ClusterId: optID(d.ClusterID),
		AttemptLog: make([]api.DeliveryAttempt, len(d.Log))}
	if d.EventSeq != 0 {
		out.EventSeq = ptr(d.EventSeq)
	}
	if d.Status == backstop.DeliveryPending {
		out.NextAttemptAt = ptr(d.NextAttemptAt)
	}
	if d.LastError != "" {
		out.LastError = ptr(d.LastError)
	}
	for i, a := range d.Log {
		x := api.DeliveryAttempt{N: a.N, At: a.At, LatencyMs: float64(a.Latency.Microseconds()) / 1000, Outcome: api.DeliveryAttemptOutcome(a.Outcome)}
		if a.StatusCode != 0 {
			x.StatusCode = ptr(a.StatusCode)
		}
		if a.Error != "" {
			x.Error = ptr(a.Error)
		}
		if a.Excerpt != "" {
			x.ResponseExcerpt = ptr(a.Excerpt)
		}
		out.AttemptLog[i] = x
	}
	return out
}

func deliveryList(ds []backstop.Delivery, next string) api.DeliveryList {
	out := api.DeliveryList{Items: make([]api.Delivery, len(ds)), NextCursor: nextCursor(next)}
	for i, d := range ds {
		out.Items[i] = toAPIDelivery(d)
	}
	return out
}

func statusFilter(p *api.DeliveryStatus) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

// ListWebhookDeliveries shows a webhook's delivery log.
func (s *Server) ListWebhookDeliveries(ctx context.Context, r api.ListWebhookDeliveriesRequestObject) (api.ListWebhookDeliveriesResponseObject, error) {
	ds, next, err := s.store.ListDeliveries(ctx, backstop.TargetWebhook, r.WebhookId.String(), statusFilter(r.Params.Status), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	return api.ListWebhookDeliveries200JSONResponse(deliveryList(ds, next)), nil
}

// GetWebhookDelivery returns one delivery.
func (s *Server) GetWebhookDelivery(ctx context.Context, r api.GetWebhookDeliveryRequestObject) (api.GetWebhookDeliveryResponseObject, error) {
	d, err := s.store.FindDelivery(ctx, backstop.TargetWebhook, r.WebhookId.String(), r.DeliveryId.String())
	if err != nil {
		return nil, err
	}
	return api.GetWebhookDelivery200JSONResponse(toAPIDelivery(d)), nil
}

// RedeliverWebhookDelivery queues an event again.
func (s *Server) RedeliverWebhookDelivery(ctx context.Context, r api.RedeliverWebhookDeliveryRequestObject) (api.RedeliverWebhookDeliveryResponseObject, error) {
	d, err := s.store.Redeliver(ctx, backstop.TargetWebhook, r.WebhookId.String(), r.DeliveryId.String())
	if err != nil {
		return nil, err
	}
	return api.RedeliverWebhookDelivery202JSONResponse(toAPIDelivery(d)), nil
}

// SNMP targets.

func toAPISnmpTarget(t backstop.Target) api.SnmpTarget {
	c := t.SNMP
	out := api.SnmpTarget{Id: apiID(t.ID), Name: t.Name, Host: c.Host, Port: c.Port, SnmpVersion: api.SnmpVersion(c.Version), Enabled: t.Enabled,
		EventTypes: nonNilStrings(t.Filter.EventTypes), MinSeverity: api.Severity(t.Filter.MinSeverity), ClusterIds: apiUUIDs(t.Filter.ClusterIDs),
		Version: t.Version, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
	if t.Description != "" {
		out.Description = ptr(t.Description)
	}
	if c.Version == backstop.SNMPv3 {
		out.V3User, out.V3AuthProtocol, out.V3PrivProtocol = ptr(c.User), ptr(c.AuthProtocol), ptr(c.PrivProtocol)
	}
	return out
}

// snmpSettings applies the SNMP fields of a request to a configuration
// and its secrets, then checks they fit together.
func snmpSettings(c backstop.SNMPConfig, sec backstop.SNMPSecrets, host *string, port *int, version *api.SnmpVersion, community *string, v3 *api.SnmpV3) (backstop.SNMPConfig, backstop.SNMPSecrets, error) {
	v := &backstop.ValidationError{}
	if host != nil {
		c.Host = strings.TrimSpace(*host)
		if c.Host == "" || strings.ContainsAny(c.Host, " /") {
			v.Add("/host", "%q is not a host name or address", *host)
		} else if ip := net.ParseIP(c.Host); ip == nil && len(c.Host) > 253 {
			v.Add("/host", "host name too long")
		}
	}
	if port != nil {
		c.Port = *port
	}
	if version != nil && string(*version) != c.Version {
		c.Version = string(*version)
		// Another version's secrets do not carry over.
		sec = backstop.SNMPSecrets{}
		c.User, c.AuthProtocol, c.PrivProtocol = "", "", ""
	}
	if community != nil {
		sec.Community = *community
	}
	if v3 != nil {
		c.User, c.AuthProtocol, c.PrivProtocol = v3.User, string(v3.AuthProtocol), string(v3.PrivProtocol)
		sec.AuthPassphrase, sec.PrivPassphrase = deref(v3.AuthPassphrase, ""), deref(v3.PrivPassphrase, "")
	}
	switch c.Version {
	case backstop.SNMPv2c:
		if sec.Community == "" {
			v.Add("/community", "snmp_version v2c needs a community")
		}
		if v3 != nil {
			v.Add("/v3", "v3 settings are for snmp_version v3")
		}
	case backstop.SNMPv3:
		if c.User == "" {
			v.Add("/v3", "snmp_version v3 needs v3 (user, protocols and passphrases)")
		}
		if community != nil {
			v.Add("/community", "a community is for snmp_version v2c")
		}
		sec.Community = ""
	}
	return c, sec, v.Err()
}

func (s *Server) sealSNMP(d Deliverer, id string, sec backstop.SNMPSecrets) ([]byte, error) {
	b, err := json.Marshal(sec)
	if err != nil {
		return nil, err
	}
	return d.Seal(id, b), nil
}

// CreateSnmpTarget adds a trap target.
func (s *Server) CreateSnmpTarget(ctx context.Context, r api.CreateSnmpTargetRequestObject) (api.CreateSnmpTargetResponseObject, error) {
	dl, err := s.deliverer()
	if err != nil {
		return nil, err
	}
	b := r.Body
	c, sec, err := snmpSettings(backstop.SNMPConfig{Port: 162}, backstop.SNMPSecrets{}, &b.Host, b.Port, &b.SnmpVersion, b.Community, b.V3)
	if err != nil {
		return nil, err
	}
	f := backstop.TargetFilter{EventTypes: deref(b.EventTypes, nil), MinSeverity: string(deref(b.MinSeverity, api.Severity(backstop.SeverityCritical))),
		ClusterIDs: uuidStrings(b.ClusterIds)}
	if err := s.validateFilter(ctx, f); err != nil {
		return nil, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	sealed, err := s.sealSNMP(dl, id, sec)
	if err != nil {
		return nil, err
	}
	t, err := s.store.CreateTarget(ctx, backstop.Target{ID: id, Kind: backstop.TargetSNMP, Name: deref(b.Name, ""), Description: deref(b.Description, ""),
		Enabled: deref(b.Enabled, true), Filter: f, SNMP: &c, Secret: sealed})
	if err != nil {
		return nil, err
	}
	return api.CreateSnmpTarget201JSONResponse{Body: toAPISnmpTarget(t),
		Headers: api.CreateSnmpTarget201ResponseHeaders{ETag: etag(t.Version), Location: location("/v1/snmp-targets/%s", t.ID)}}, nil
}

// ListSnmpTargets lists trap targets.
func (s *Server) ListSnmpTargets(ctx context.Context, r api.ListSnmpTargetsRequestObject) (api.ListSnmpTargetsResponseObject, error) {
	ts, next, err := s.store.ListTargets(ctx, backstop.TargetSNMP, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListSnmpTargets200JSONResponse{Items: make([]api.SnmpTarget, len(ts)), NextCursor: nextCursor(next)}
	for i, t := range ts {
		out.Items[i] = toAPISnmpTarget(t)
	}
	return out, nil
}

// GetSnmpTarget returns a trap target.
func (s *Server) GetSnmpTarget(ctx context.Context, r api.GetSnmpTargetRequestObject) (api.GetSnmpTargetResponseObject, error) {
	t, err := s.store.FindTarget(ctx, backstop.TargetSNMP, r.TargetId.String())
	if err != nil {
		return nil, err
	}
	return api.GetSnmpTarget200JSONResponse{Body: toAPISnmpTarget(t), Headers: api.GetSnmpTarget200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// UpdateSnmpTarget changes a trap target; secrets given replace the
// stored ones.
func (s *Server) UpdateSnmpTarget(ctx context.Context, r api.UpdateSnmpTargetRequestObject) (api.UpdateSnmpTargetResponseObject, error) {
	dl, err := s.deliverer()
	if err != nil {
		return nil, err
	}
	b := r.Body
	f := patchFilter(backstop.TargetFilter{}, b.EventTypes, nil, b.ClusterIds)
	if err := s.validateFilter(ctx, f); err != nil {
		return nil, err
	}
	t, err := s.store.UpdateTarget(ctx, backstop.TargetSNMP, r.TargetId.String(), ifMatchVersion(r.Params.IfMatch), func(t backstop.Target) (backstop.Target, error) {
		var sec backstop.SNMPSecrets
		plain, err := dl.Open(t.ID, t.Secret)
		if err != nil {
			return t, err
		}
		if err := json.Unmarshal(plain, &sec); err != nil {
			return t, fmt.Errorf("SNMP secrets of %s: %w", t.ID, err)
		}
		c, sec, err := snmpSettings(*t.SNMP, sec, b.Host, b.Port, b.SnmpVersion, b.Community, b.V3)
		if err != nil {
			return t, err
		}
		if t.Secret, err = s.sealSNMP(dl, t.ID, sec); err != nil {
			return t, err
		}
		t.SNMP = &c
		t.Name, t.Description, t.Enabled = deref(b.Name, t.Name), deref(b.Description, t.Description), deref(b.Enabled, t.Enabled)
		t.Filter = patchFilter(t.Filter, b.EventTypes, b.MinSeverity, b.ClusterIds)
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return api.UpdateSnmpTarget200JSONResponse{Body: toAPISnmpTarget(t), Headers: api.UpdateSnmpTarget200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// DeleteSnmpTarget deletes a trap target.
func (s *Server) DeleteSnmpTarget(ctx context.Context, r api.DeleteSnmpTargetRequestObject) (api.DeleteSnmpTargetResponseObject, error) {
	if err := s.store.DeleteTarget(ctx, backstop.TargetSNMP, r.TargetId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteSnmpTarget204Response{}, nil
}

// TestSnmpTarget sends a test trap now.
func (s *Server) TestSnmpTarget(ctx context.Context, r api.TestSnmpTargetRequestObject) (api.TestSnmpTargetResponseObject, error) {
	dl, err := s.deliverer()
	if err != nil {
		return nil, err
	}
	t, err := s.store.FindTarget(ctx, backstop.TargetSNMP, r.TargetId.String())
	if err != nil {
		return nil, err
	}
	d, err := dl.TestTrap(ctx, t)
	if err != nil {
		return nil, err
	}
	return api.TestSnmpTarget200JSONResponse(toAPIDelivery(d)), nil
}

// ListSnmpDeliveries shows a trap target's delivery log.
func (s *Server) ListSnmpDeliveries(ctx context.Context, r api.ListSnmpDeliveriesRequestObject) (api.ListSnmpDeliveriesResponseObject, error) {
	ds, next, err := s.store.ListDeliveries(ctx, backstop.TargetSNMP, r.TargetId.String(), statusFilter(r.Params.Status), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	return api.ListSnmpDeliveries200JSONResponse(deliveryList(ds, next)), nil
}

// GetSnmpEngine shows the SNMPv3 engine.
func (s *Server) GetSnmpEngine(ctx context.Context, _ api.GetSnmpEngineRequestObject) (api.GetSnmpEngineResponseObject, error) {
	e, err := s.store.SNMPEngine(ctx)
	if err != nil {
		return nil, err
	}
	return api.GetSnmpEngine200JSONResponse{EngineId: hex.EncodeToString(e.ID), Boots: int(e.Boots), Time: int(e.Time)}, nil
}

// GetSnmpMib serves BACKSTOP-MIB.
func (s *Server) GetSnmpMib(ctx context.Context, _ api.GetSnmpMibRequestObject) (api.GetSnmpMibResponseObject, error) {
	return api.GetSnmpMib200TextResponse(openapi.MIB), nil
}
