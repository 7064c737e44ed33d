package server

import (
	"context"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// tokenHandlers manage API tokens and show the audit trail.
type tokenHandlers struct {
	store TokenStore
}

// CreateToken creates an API token; its secret is in this answer only.
func (th *tokenHandlers) CreateToken(ctx context.Context, r api.CreateTokenRequestObject) (api.CreateTokenResponseObject, error) {
	t, secret, err := th.store.CreateToken(ctx, r.Body.Name, backstop.Role(r.Body.Role))
	if err != nil {
		return nil, err
	}
	a := toAPIToken(t)
	return api.CreateToken201JSONResponse{
		Body:    api.TokenCreated{Id: a.Id, Name: a.Name, Role: a.Role, Prefix: a.Prefix, CreatedAt: a.CreatedAt, Secret: secret},
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

// DeleteToken revokes a token.
func (th *tokenHandlers) DeleteToken(ctx context.Context, r api.DeleteTokenRequestObject) (api.DeleteTokenResponseObject, error) {
	if err := th.store.DeleteToken(ctx, r.TokenId.String()); err != nil {
		return nil, err
	}
	return api.DeleteToken204Response{}, nil
}

// ListAudit lists the audit trail.
func (th *tokenHandlers) ListAudit(ctx context.Context, r api.ListAuditRequestObject) (api.ListAuditResponseObject, error) {
	as, next, err := th.store.ListAudit(ctx, page(r.Params.Limit, r.Params.Cursor))
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
