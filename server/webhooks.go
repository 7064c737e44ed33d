package server

import (
	"context"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// webhookHandlers manage webhook subscriptions and their deliveries.
type webhookHandlers struct {
	store   targetStore
	deliver Deliverer
}

func validWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return backstop.Invalid("/url", "%q is not an absolute http or https URL", raw)
	}
	return nil
}

func toAPIWebhook(t backstop.Target) api.Webhook {
	w := api.Webhook{Id: apiID(t.ID), Name: t.Name, Url: t.Webhook.URL, Enabled: t.Enabled, EventTypes: nonNilStrings(t.Filter.EventTypes),
		MinSeverity: api.Severity(t.Filter.MinSeverity), ClusterIds: apiUUIDs(t.Filter.ClusterIDs), SecretPrefix: t.Webhook.SecretPrefix,
		Version: t.Version, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
	if t.Description != "" {
		w.Description = ptr(t.Description)
	}
	if u := t.Webhook.PreviousSecretUntil; u != nil && t.Webhook.PreviousSecretPrefix != "" && time.Now().Before(*u) {
		w.PreviousSecretPrefix, w.PreviousSecretExpiresAt = ptr(t.Webhook.PreviousSecretPrefix), ptr(u.UTC())
	}
	return w
}

// withSecret is w with its secret, as shown at creation and rotation.
func withSecret(w api.Webhook, secret string) api.WebhookCreated {
	return api.WebhookCreated{Id: w.Id, Name: w.Name, Description: w.Description, Url: w.Url, Enabled: w.Enabled, EventTypes: w.EventTypes,
		MinSeverity: w.MinSeverity, ClusterIds: w.ClusterIds, SecretPrefix: w.SecretPrefix, PreviousSecretPrefix: w.PreviousSecretPrefix,
		PreviousSecretExpiresAt: w.PreviousSecretExpiresAt, Version: w.Version, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, Secret: secret}
}

// CreateWebhook subscribes a receiver; the secret is in this answer only.
func (wh *webhookHandlers) CreateWebhook(ctx context.Context, r api.CreateWebhookRequestObject) (api.CreateWebhookResponseObject, error) {
	d, err := requireDeliverer(wh.deliver)
	if err != nil {
		return nil, err
	}
	b := r.Body
	if err := validWebhookURL(b.Url); err != nil {
		return nil, err
	}
	f := backstop.TargetFilter{EventTypes: deref(b.EventTypes, nil), MinSeverity: string(deref(b.MinSeverity, api.Severity(backstop.SeverityInfo))),
		ClusterIDs: uuidStrings(b.ClusterIds)}
	if err := validateFilter(ctx, wh.store, f); err != nil {
		return nil, err
	}
	secret := backstop.NewWebhookSecret()
	id := uuid.Must(uuid.NewV7()).String()
	t, err := wh.store.CreateTarget(ctx, backstop.Target{ID: id, Kind: backstop.TargetWebhook, Name: deref(b.Name, ""), Description: deref(b.Description, ""),
		Enabled: deref(b.Enabled, true), Filter: f, Webhook: &backstop.WebhookConfig{URL: b.Url, SecretPrefix: secret[:10]},
		Secret: d.Seal(id, []byte(secret))})
	if err != nil {
		return nil, err
	}
	return api.CreateWebhook201JSONResponse{
		Body:    withSecret(toAPIWebhook(t), secret),
		Headers: api.CreateWebhook201ResponseHeaders{ETag: etag(t.Version), Location: location("/v1/webhooks/%s", t.ID)},
	}, nil
}

// defaultRotationOverlap is how long the previous secret keeps signing
// after a rotation that names no overlap.
const defaultRotationOverlap = 24 * time.Hour

// RotateWebhookSecret replaces a webhook's signing secret; the previous
// one keeps signing for the overlap. The new secret is in this answer
// only.
func (wh *webhookHandlers) RotateWebhookSecret(ctx context.Context, r api.RotateWebhookSecretRequestObject) (api.RotateWebhookSecretResponseObject, error) {
	d, err := requireDeliverer(wh.deliver)
	if err != nil {
		return nil, err
	}
	overlap := defaultRotationOverlap
	if r.Body != nil && r.Body.OverlapS != nil {
		overlap = time.Duration(*r.Body.OverlapS) * time.Second
	}
	secret := backstop.NewWebhookSecret()
	t, err := wh.store.UpdateTarget(ctx, backstop.TargetWebhook, r.WebhookId.String(), ifMatchVersion(r.Params.IfMatch), func(t backstop.Target) (backstop.Target, error) {
		plain, err := d.Open(t.ID, t.Secret)
		if err != nil {
			return t, err
		}
		cur, err := backstop.ParseWebhookSecrets(plain)
		if err != nil {
			return t, err
		}
		now := time.Now()
		next := cur.Rotate(secret, now, overlap)
		t.Secret = d.Seal(t.ID, next.Bytes())
		c := *t.Webhook
		c.SecretPrefix, c.PreviousSecretPrefix, c.PreviousSecretUntil = secret[:10], "", nil
		if next.Previous != "" {
			c.PreviousSecretPrefix, c.PreviousSecretUntil = next.Previous[:10], &next.PreviousUntil
		}
		t.Webhook = &c
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return api.RotateWebhookSecret200JSONResponse{Body: withSecret(toAPIWebhook(t), secret),
		Headers: api.RotateWebhookSecret200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// ListWebhooks lists webhooks.
func (wh *webhookHandlers) ListWebhooks(ctx context.Context, r api.ListWebhooksRequestObject) (api.ListWebhooksResponseObject, error) {
	ts, next, err := wh.store.ListTargets(ctx, backstop.TargetWebhook, page(r.Params.Limit, r.Params.Cursor))
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
func (wh *webhookHandlers) GetWebhook(ctx context.Context, r api.GetWebhookRequestObject) (api.GetWebhookResponseObject, error) {
	t, err := wh.store.FindTarget(ctx, backstop.TargetWebhook, r.WebhookId.String())
	if err != nil {
		return nil, err
	}
	return api.GetWebhook200JSONResponse{Body: toAPIWebhook(t), Headers: api.GetWebhook200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// UpdateWebhook changes a webhook.
func (wh *webhookHandlers) UpdateWebhook(ctx context.Context, r api.UpdateWebhookRequestObject) (api.UpdateWebhookResponseObject, error) {
	b := r.Body
	if b.Url != nil {
		if err := validWebhookURL(*b.Url); err != nil {
			return nil, err
		}
	}
	f := patchFilter(backstop.TargetFilter{}, b.EventTypes, nil, b.ClusterIds)
	if err := validateFilter(ctx, wh.store, f); err != nil {
		return nil, err
	}
	t, err := wh.store.UpdateTarget(ctx, backstop.TargetWebhook, r.WebhookId.String(), ifMatchVersion(r.Params.IfMatch), func(t backstop.Target) (backstop.Target, error) {
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
func (wh *webhookHandlers) DeleteWebhook(ctx context.Context, r api.DeleteWebhookRequestObject) (api.DeleteWebhookResponseObject, error) {
	if err := wh.store.DeleteTarget(ctx, backstop.TargetWebhook, r.WebhookId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteWebhook204Response{}, nil
}

// PingWebhook sends a ping now.
func (wh *webhookHandlers) PingWebhook(ctx context.Context, r api.PingWebhookRequestObject) (api.PingWebhookResponseObject, error) {
	dl, err := requireDeliverer(wh.deliver)
	if err != nil {
		return nil, err
	}
	t, err := wh.store.FindTarget(ctx, backstop.TargetWebhook, r.WebhookId.String())
	if err != nil {
		return nil, err
	}
	d, err := dl.Ping(ctx, t)
	if err != nil {
		return nil, err
	}
	return api.PingWebhook200JSONResponse(toAPIDelivery(d)), nil
}

// ListWebhookDeliveries shows a webhook's delivery log.
func (wh *webhookHandlers) ListWebhookDeliveries(ctx context.Context, r api.ListWebhookDeliveriesRequestObject) (api.ListWebhookDeliveriesResponseObject, error) {
	ds, next, err := wh.store.ListDeliveries(ctx, backstop.TargetWebhook, r.WebhookId.String(), statusFilter(r.Params.Status), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	return api.ListWebhookDeliveries200JSONResponse(deliveryList(ds, next)), nil
}

// GetWebhookDelivery returns one delivery.
func (wh *webhookHandlers) GetWebhookDelivery(ctx context.Context, r api.GetWebhookDeliveryRequestObject) (api.GetWebhookDeliveryResponseObject, error) {
	d, err := wh.store.FindDelivery(ctx, backstop.TargetWebhook, r.WebhookId.String(), r.DeliveryId.String())
	if err != nil {
		return nil, err
	}
	return api.GetWebhookDelivery200JSONResponse(toAPIDelivery(d)), nil
}

// RedeliverWebhookDelivery queues an event again.
func (wh *webhookHandlers) RedeliverWebhookDelivery(ctx context.Context, r api.RedeliverWebhookDeliveryRequestObject) (api.RedeliverWebhookDeliveryResponseObject, error) {
	d, err := wh.store.Redeliver(ctx, backstop.TargetWebhook, r.WebhookId.String(), r.DeliveryId.String())
	if err != nil {
		return nil, err
	}
	return api.RedeliverWebhookDelivery202JSONResponse(toAPIDelivery(d)), nil
}
