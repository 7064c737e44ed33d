package server

import (
	"context"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// nodeHandlers manage a cluster's nodes.
type nodeHandlers struct {
	store NodeStore
	// fingerprint is the active signing key's, for enrollment tokens.
	fingerprint func() string
}

// CreateNode adds a node and returns its one-time enrollment token.
func (nh *nodeHandlers) CreateNode(ctx context.Context, r api.CreateNodeRequestObject) (api.CreateNodeResponseObject, error) {
	n, enr, err := nh.store.CreateNode(ctx, backstop.Node{
		ClusterID:   r.ClusterId.String(),
		Name:        r.Body.Name,
		Description: deref(r.Body.Description, ""),
	}, nh.fingerprint())
	if err != nil {
		return nil, err
	}
	return api.CreateNode201JSONResponse{
		Body:    toAPINodeCreated(n, enr),
		Headers: api.CreateNode201ResponseHeaders{ETag: etag(n.Version), Location: location("/v1/clusters/%s/nodes/%s", n.ClusterID, n.ID)},
	}, nil
}

// ReissueEnrollmentToken gives a node that has not enrolled yet a new
// enrollment token, in this answer only.
func (nh *nodeHandlers) ReissueEnrollmentToken(ctx context.Context, r api.ReissueEnrollmentTokenRequestObject) (api.ReissueEnrollmentTokenResponseObject, error) {
	n, enr, err := nh.store.ReissueEnrollment(ctx, r.ClusterId.String(), r.NodeId.String(), ifMatchVersion(r.Params.IfMatch), nh.fingerprint())
	if err != nil {
		return nil, err
	}
	return api.ReissueEnrollmentToken200JSONResponse{
		Body:    toAPINodeCreated(n, enr),
		Headers: api.ReissueEnrollmentToken200ResponseHeaders{ETag: etag(n.Version)},
	}, nil
}

// ListNodes lists a cluster's nodes.
func (nh *nodeHandlers) ListNodes(ctx context.Context, r api.ListNodesRequestObject) (api.ListNodesResponseObject, error) {
	ns, next, err := nh.store.ListNodes(ctx, r.ClusterId.String(), named(page(r.Params.Limit, r.Params.Cursor), r.Params.Name))
	if err != nil {
		return nil, err
	}
	out := api.ListNodes200JSONResponse{Items: make([]api.Node, len(ns)), NextCursor: nextCursor(next)}
	for i, n := range ns {
		out.Items[i] = toAPINode(n)
	}
	return out, nil
}

// GetNode returns a node.
func (nh *nodeHandlers) GetNode(ctx context.Context, r api.GetNodeRequestObject) (api.GetNodeResponseObject, error) {
	n, err := nh.store.FindNodeByID(ctx, r.ClusterId.String(), r.NodeId.String())
	if err != nil {
		return nil, err
	}
	return api.GetNode200JSONResponse{Body: toAPINode(n), Headers: api.GetNode200ResponseHeaders{ETag: etag(n.Version)}}, nil
}

// UpdateNode renames a node or changes its description.
func (nh *nodeHandlers) UpdateNode(ctx context.Context, r api.UpdateNodeRequestObject) (api.UpdateNodeResponseObject, error) {
	n, err := nh.store.UpdateNode(ctx, r.ClusterId.String(), r.NodeId.String(), ifMatchVersion(r.Params.IfMatch),
		backstop.NodeUpdate{Name: r.Body.Name, Description: r.Body.Description})
	if err != nil {
		return nil, err
	}
	return api.UpdateNode200JSONResponse{Body: toAPINode(n), Headers: api.UpdateNode200ResponseHeaders{ETag: etag(n.Version)}}, nil
}

// DeleteNode removes a node no hierarchy names.
func (nh *nodeHandlers) DeleteNode(ctx context.Context, r api.DeleteNodeRequestObject) (api.DeleteNodeResponseObject, error) {
	if err := nh.store.DeleteNode(ctx, r.ClusterId.String(), r.NodeId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteNode204Response{}, nil
}

// toAPINodeCreated is a node with the enrollment token shown only in the
// answer that made it.
func toAPINodeCreated(n backstop.Node, enr backstop.Enrollment) api.NodeCreated {
	a := toAPINode(n)
	return api.NodeCreated{
		Id: a.Id, ClusterId: a.ClusterId, Name: a.Name, Description: a.Description, State: a.State,
		Version: a.Version, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
		EnrollmentToken: enr.Token, EnrollmentExpiresAt: enr.ExpiresAt,
	}
}
