package server

import (
	"context"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// hierarchyHandlers manage a cluster's hierarchies.
type hierarchyHandlers struct {
	store HierarchyStore
}

// CreateHierarchy creates a whole hierarchy atomically.
func (hh *hierarchyHandlers) CreateHierarchy(ctx context.Context, r api.CreateHierarchyRequestObject) (api.CreateHierarchyResponseObject, error) {
	h, err := hh.store.CreateHierarchy(ctx, fromAPIHierarchySpec(r.ClusterId.String(), r.Body))
	if err != nil {
		return nil, err
	}
	return api.CreateHierarchy201JSONResponse{Body: toAPIHierarchy(h), Headers: api.CreateHierarchy201ResponseHeaders{
		ETag: etag(h.Version), Location: location("/v1/clusters/%s/hierarchies/%s", h.ClusterID, h.ID),
	}}, nil
}

// ListHierarchies lists a cluster's hierarchies.
func (hh *hierarchyHandlers) ListHierarchies(ctx context.Context, r api.ListHierarchiesRequestObject) (api.ListHierarchiesResponseObject, error) {
	hs, next, err := hh.store.ListHierarchies(ctx, r.ClusterId.String(), named(page(r.Params.Limit, r.Params.Cursor), r.Params.Name))
	if err != nil {
		return nil, err
	}
	out := api.ListHierarchies200JSONResponse{Items: make([]api.Hierarchy, len(hs)), NextCursor: nextCursor(next)}
	for i, h := range hs {
		out.Items[i] = toAPIHierarchy(h)
	}
	return out, nil
}

// GetHierarchy returns a hierarchy.
func (hh *hierarchyHandlers) GetHierarchy(ctx context.Context, r api.GetHierarchyRequestObject) (api.GetHierarchyResponseObject, error) {
	h, err := hh.store.FindHierarchyByID(ctx, r.ClusterId.String(), r.HierarchyId.String())
	if err != nil {
		return nil, err
	}
	return api.GetHierarchy200JSONResponse{Body: toAPIHierarchy(h), Headers: api.GetHierarchy200ResponseHeaders{ETag: etag(h.Version)}}, nil
}

// ReplaceHierarchy replaces a whole hierarchy definition.
func (hh *hierarchyHandlers) ReplaceHierarchy(ctx context.Context, r api.ReplaceHierarchyRequestObject) (api.ReplaceHierarchyResponseObject, error) {
	// The read-only fields a GET answered (id, placement, version, ...)
	// are ignored, so a read can be written back as it is.
	b := r.Body
	spec := fromAPIHierarchySpec(r.ClusterId.String(), &api.HierarchySpec{Name: b.Name, Description: b.Description,
		ExclusivityGroup: b.ExclusivityGroup, Switchback: b.Switchback, Resources: b.Resources, Priorities: b.Priorities})
	h, err := hh.store.UpdateHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), ifMatchVersion(r.Params.IfMatch), backstop.HierarchyUpdate{
		Name: &spec.Name, Description: &spec.Description, ExclusivityGroup: &spec.ExclusivityGroup,
		Switchback: &spec.Switchback, Resources: spec.Resources, Priorities: spec.Priorities,
	})
	if err != nil {
		return nil, err
	}
	return api.ReplaceHierarchy200JSONResponse{Body: toAPIHierarchy(h), Headers: api.ReplaceHierarchy200ResponseHeaders{ETag: etag(h.Version)}}, nil
}

// UpdateHierarchy changes some fields of a hierarchy.
func (hh *hierarchyHandlers) UpdateHierarchy(ctx context.Context, r api.UpdateHierarchyRequestObject) (api.UpdateHierarchyResponseObject, error) {
	b := r.Body
	u := backstop.HierarchyUpdate{Name: b.Name, Description: b.Description, ExclusivityGroup: b.ExclusivityGroup}
	if b.Switchback != nil {
		u.Switchback = ptr(string(*b.Switchback))
	}
	if b.Resources != nil {
		u.Resources = fromAPIResources(*b.Resources)
	}
	if b.Priorities != nil {
		u.Priorities = fromAPIPriorities(*b.Priorities)
	}
	h, err := hh.store.UpdateHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), ifMatchVersion(r.Params.IfMatch), u)
	if err != nil {
		return nil, err
	}
	return api.UpdateHierarchy200JSONResponse{Body: toAPIHierarchy(h), Headers: api.UpdateHierarchy200ResponseHeaders{ETag: etag(h.Version)}}, nil
}

// DeleteHierarchy deletes a hierarchy.
func (hh *hierarchyHandlers) DeleteHierarchy(ctx context.Context, r api.DeleteHierarchyRequestObject) (api.DeleteHierarchyResponseObject, error) {
	if err := hh.store.DeleteHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteHierarchy204Response{}, nil
}
