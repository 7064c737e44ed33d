package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// What webhooks and SNMP targets share: sealing secrets, filters and
// the delivery log.

// Deliverer is what the API needs from event delivery (package notify).
type Deliverer interface {
	// Seal seals a target's secret, bound to its id; Open unseals it.
	Seal(targetID string, plain []byte) []byte
	Open(targetID string, sealed []byte) ([]byte, error)
	// Ping and TestTrap send once, now, and return the recorded delivery.
	Ping(ctx context.Context, t backstop.Target) (backstop.Delivery, error)
	TestTrap(ctx context.Context, t backstop.Target) (backstop.Delivery, error)
}

// errNoDeliverer answers the endpoints that seal target secrets or send
// (webhooks, SNMP, fence devices) on a server built without delivery:
// 503, the server cannot do it, not a fault of the request.
var errNoDeliverer = errors.New("event delivery is not configured on this server: it cannot seal target secrets or send to targets")

// requireDeliverer returns d, or errNoDeliverer when there is none: the
// endpoints that seal secrets or send answer 503 then.
func requireDeliverer(d Deliverer) (Deliverer, error) {
	if d == nil {
		return nil, errNoDeliverer
	}
	return d, nil
}

// targetStore is what webhookHandlers and snmpHandlers read and write.
type targetStore interface {
	TargetStore
	ClusterFinder
}

// validateFilter checks filters and that the clusters named exist.
func validateFilter(ctx context.Context, clusters ClusterFinder, f backstop.TargetFilter) error {
	v := &backstop.ValidationError{}
	f.Validate(v, "")
	for i, id := range f.ClusterIDs {
		if _, err := clusters.FindClusterByID(ctx, id); errors.Is(err, backstop.ErrNotFound) {
			v.Add(fmt.Sprintf("/cluster_ids/%d", i), "cluster %s does not exist", id)
		} else if err != nil {
			return err
		}
	}
	return v.Err()
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
