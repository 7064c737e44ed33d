package server

import (
	"context"
	"strings"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// tokenHandlers manage API tokens and show the audit trail.
type tokenHandlers struct {
	store TokenStore
	// revoked empties the gate's token cache (tokenCacheTTL): called
	// when a secret stops being valid.
	revoked func()
}

// CreateToken creates an API token; its secret is in this answer only.
func (th *tokenHandlers) CreateToken(ctx context.Context, r api.CreateTokenRequestObject) (api.CreateTokenResponseObject, error) {
	var clusters []string
	if r.Body.Clusters != nil {
		clusters = make([]string, len(*r.Body.Clusters))
		for i, id := range *r.Body.Clusters {
			clusters[i] = id.String()
		}
	}
	t, secret, err := th.store.CreateToken(ctx, r.Body.Name, backstop.Role(r.Body.Role), clusters)
	if err != nil {
		return nil, err
	}
	a := toAPIToken(t)
	return api.CreateToken201JSONResponse{
		Body:    api.TokenCreated{Id: a.Id, Name: a.Name, Role: a.Role, Prefix: a.Prefix, CreatedAt: a.CreatedAt, Secret: secret, Clusters: a.Clusters},
		Headers: api.CreateToken201ResponseHeaders{Location: location("/v1/tokens/%s", t.ID)},
	}, nil
}

// ListTokens lists API tokens without their secrets.
func (th *tokenHandlers) ListTokens(ctx context.Context, r api.ListTokensRequestObject) (api.ListTokensResponseObject, error) {
	ts, next, err := th.store.ListTokens(ctx, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListTokens200JSONResponse{Items: make([]api.Token, len(ts)), NextCursor: nextCursor(next)}
	for i, t := range ts {
		out.Items[i] = toAPIToken(t)
	}
	return out, nil
}

// tokenETag is a token's ETag: its secret's prefix, which changes when
// (and only when) the token is re-issued; name and role never change.
func tokenETag(t backstop.Token) string { return `"` + t.Prefix + `"` }

// ifMatchPrefix turns If-Match into the token prefix it names: nil for
// none or "*", and one no token has for a weak tag (RFC 9110's strong
// comparison never matches it).
func ifMatchPrefix(h *string) *string {
	if h == nil {
		return nil
	}
	v := strings.TrimSpace(*h)
	if v == "" || v == "*" {
		return nil
	}
	if strings.HasPrefix(v, "W/") {
		return ptr("")
	}
	return ptr(strings.Trim(v, `"`))
}

// GetToken returns a token without its secret.
func (th *tokenHandlers) GetToken(ctx context.Context, r api.GetTokenRequestObject) (api.GetTokenResponseObject, error) {
	t, err := th.store.FindToken(ctx, r.TokenId.String())
	if err != nil {
		return nil, err
	}
	return api.GetToken200JSONResponse{Body: toAPIToken(t), Headers: api.GetToken200ResponseHeaders{ETag: ptr(tokenETag(t))}}, nil
}

// ReissueToken gives a token a new secret, in this answer only.
func (th *tokenHandlers) ReissueToken(ctx context.Context, r api.ReissueTokenRequestObject) (api.ReissueTokenResponseObject, error) {
	t, secret, err := th.store.ReissueToken(ctx, r.TokenId.String(), ifMatchPrefix(r.Params.IfMatch))
	if err != nil {
		return nil, err
	}
	th.revoked()
	a := toAPIToken(t)
	return api.ReissueToken200JSONResponse{
		Body:    api.TokenCreated{Id: a.Id, Name: a.Name, Role: a.Role, Prefix: a.Prefix, CreatedAt: a.CreatedAt, LastUsedAt: a.LastUsedAt, Secret: secret, Clusters: a.Clusters},
		Headers: api.ReissueToken200ResponseHeaders{ETag: ptr(tokenETag(t))},
	}, nil
}

// DeleteToken revokes a token.
func (th *tokenHandlers) DeleteToken(ctx context.Context, r api.DeleteTokenRequestObject) (api.DeleteTokenResponseObject, error) {
	if err := th.store.DeleteToken(ctx, r.TokenId.String(), ifMatchPrefix(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	th.revoked()
	return api.DeleteToken204Response{}, nil
}

// ListAudit lists the audit trail.
func (th *tokenHandlers) ListAudit(ctx context.Context, r api.ListAuditRequestObject) (api.ListAuditResponseObject, error) {
	q := r.Params
	f := backstop.AuditFilter{Actor: deref(q.Actor, ""), Action: deref(q.Action, ""), Since: deref(q.Since, time.Time{}), Until: deref(q.Until, time.Time{}),
		Newest: q.Order != nil && *q.Order == api.Newest}
	if q.ClusterId != nil {
		f.ClusterID = q.ClusterId.String()
	}
	as, next, err := th.store.ListAudit(ctx, f, page(q.Limit, q.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListAudit200JSONResponse{Items: make([]api.AuditRecord, len(as)), NextCursor: nextCursor(next)}
	for i, a := range as {
		out.Items[i] = toAPIAudit(a)
	}
	return out, nil
}

// GetWhoami names the caller's token and role, so that a client offers
// only what the role may do.
func (th *tokenHandlers) GetWhoami(ctx context.Context, _ api.GetWhoamiRequestObject) (api.GetWhoamiResponseObject, error) {
	a := backstop.ActorFrom(ctx)
	out := api.GetWhoami200JSONResponse{Name: a.Name, Role: api.Role(a.Role)}
	if a.TokenID != "" {
		id := apiID(a.TokenID)
		out.TokenId = &id
	}
	return out, nil
}
