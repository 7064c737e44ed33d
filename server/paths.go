package server

import (
	"context"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// pathHandlers manage the paths between a cluster's nodes.
type pathHandlers struct {
	store PathStore
}

// CreatePath creates a path in both directions.
func (ph *pathHandlers) CreatePath(ctx context.Context, r api.CreatePathRequestObject) (api.CreatePathResponseObject, error) {
	b := r.Body
	v := &backstop.ValidationError{}
	for _, e := range []struct {
		at  string
		end api.PathEnd
	}{{"/a/address", b.A}, {"/b/address", b.B}} {
		if !validIP(e.end.Address) {
			v.Add(e.at, "%q is not an IP address", e.end.Address)
		}
	}
	if b.A.NodeId == b.B.NodeId {
		v.Add("/b/node_id", "a path joins two different nodes")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	ps, err := ph.store.CreatePath(ctx, r.ClusterId.String(),
		backstop.PathEnd{NodeID: b.A.NodeId.String(), Address: b.A.Address},
		backstop.PathEnd{NodeID: b.B.NodeId.String(), Address: b.B.Address},
		deref(b.Priority, 1))
	if err != nil {
		return nil, err
	}
	return api.CreatePath201JSONResponse{Forward: toAPIPath(ps[0]), Reverse: toAPIPath(ps[1])}, nil
}

// ListPaths lists a cluster's directed paths.
func (ph *pathHandlers) ListPaths(ctx context.Context, r api.ListPathsRequestObject) (api.ListPathsResponseObject, error) {
	ps, next, err := ph.store.ListPaths(ctx, r.ClusterId.String(), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListPaths200JSONResponse{Items: make([]api.Path, len(ps)), NextCursor: nextCursor(next)}
	for i, p := range ps {
		out.Items[i] = toAPIPath(p)
	}
	return out, nil
}

// GetPath returns one direction of a path.
func (ph *pathHandlers) GetPath(ctx context.Context, r api.GetPathRequestObject) (api.GetPathResponseObject, error) {
	p, err := ph.store.FindPathByID(ctx, r.ClusterId.String(), r.PathId.String())
	if err != nil {
		return nil, err
	}
	return api.GetPath200JSONResponse{Body: toAPIPath(p), Headers: api.GetPath200ResponseHeaders{ETag: etag(p.Version())}}, nil
}

// DeletePath deletes both directions of a path.
func (ph *pathHandlers) DeletePath(ctx context.Context, r api.DeletePathRequestObject) (api.DeletePathResponseObject, error) {
	if err := ph.store.DeletePath(ctx, r.ClusterId.String(), r.PathId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeletePath204Response{}, nil
}
