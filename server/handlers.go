package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/common/expfmt"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
)

// Handlers convert API types to domain types, call the store and convert
// back. They never build error bodies: a returned error reaches writeError
// through the strict server's ResponseErrorHandlerFunc.

// GetHealthz answers while the process is up.
func (s *Server) GetHealthz(ctx context.Context, _ api.GetHealthzRequestObject) (api.GetHealthzResponseObject, error) {
	return api.GetHealthz200JSONResponse{Status: "ok"}, nil
}

// GetReadyz answers 200 when the database answers and has this binary's
// newest migration.
func (s *Server) GetReadyz(ctx context.Context, _ api.GetReadyzRequestObject) (api.GetReadyzResponseObject, error) {
	unready := func(detail string) api.GetReadyzResponseObject {
		return api.GetReadyz503ApplicationProblemPlusJSONResponse{ProblemApplicationProblemPlusJSONResponse: api.ProblemApplicationProblemPlusJSONResponse{
			Type: problemBase + "not-ready", Title: "Service Unavailable", Status: 503, Detail: &detail,
		}}
	}
	if err := s.store.Ping(ctx); err != nil {
		s.log.WarnContext(ctx, "readiness: database unreachable", "err", err)
		return unready("database unreachable"), nil
	}
	v, clean, err := s.store.SchemaVersion(ctx)
	switch {
	case err != nil:
		return unready("schema not migrated"), nil
	case !clean:
		return unready(fmt.Sprintf("schema version %d is dirty", v)), nil
	case v < s.schema:
		return unready(fmt.Sprintf("schema version %d, this binary needs %d", v, s.schema)), nil
	}
	return api.GetReadyz200JSONResponse{Status: "ok", SchemaVersion: ptr(int(v))}, nil
}

// GetMetrics renders the registry in the Prometheus text format.
func (s *Server) GetMetrics(ctx context.Context, _ api.GetMetricsRequestObject) (api.GetMetricsResponseObject, error) {
	mfs, err := s.registry.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("encode metrics: %w", err)
		}
	}
	return api.GetMetrics200TextResponse(buf.String()), nil
}

// GetOpenAPI serves the contract.
func (s *Server) GetOpenAPI(ctx context.Context, _ api.GetOpenAPIRequestObject) (api.GetOpenAPIResponseObject, error) {
	return api.GetOpenAPI200ApplicationyamlResponse{Body: bytes.NewReader(openapi.Spec), ContentLength: int64(len(openapi.Spec))}, nil
}

// CreateCluster creates a cluster with the defaults of the design brief.
func (s *Server) CreateCluster(ctx context.Context, r api.CreateClusterRequestObject) (api.CreateClusterResponseObject, error) {
	b := r.Body
	profile := string(deref(b.TimingProfile, api.TimingProfile(backstop.ProfileLAN)))
	t, err := backstop.ResolveTiming(profile, fromAPITiming(b.Timing), "/timing")
	if err != nil {
		return nil, err
	}
	c, err := s.store.CreateCluster(ctx, backstop.Cluster{
		Name:              b.Name,
		Description:       deref(b.Description, ""),
		TimingProfile:     profile,
		Timing:            t,
		SwitchbackDefault: string(deref(b.SwitchbackDefault, backstop.SwitchbackIntelligent)),
		Fencing:           string(deref(b.Fencing, backstop.FencingSelf)),
	})
	if err != nil {
		return nil, err
	}
	return api.CreateCluster201JSONResponse{Body: toAPICluster(c), Headers: api.CreateCluster201ResponseHeaders{
		ETag: etag(c.Version), Location: location("/v1/clusters/%s", c.ID),
	}}, nil
}

// ListClusters lists clusters.
func (s *Server) ListClusters(ctx context.Context, r api.ListClustersRequestObject) (api.ListClustersResponseObject, error) {
	cs, next, err := s.store.ListClusters(ctx, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListClusters200JSONResponse{Items: make([]api.Cluster, len(cs)), NextCursor: nextCursor(next)}
	for i, c := range cs {
		out.Items[i] = toAPICluster(c)
	}
	return out, nil
}

// GetCluster returns a cluster.
func (s *Server) GetCluster(ctx context.Context, r api.GetClusterRequestObject) (api.GetClusterResponseObject, error) {
	c, err := s.store.FindClusterByID(ctx, r.ClusterId.String())
	if err != nil {
		return nil, err
	}
	return api.GetCluster200JSONResponse{Body: toAPICluster(c), Headers: api.GetCluster200ResponseHeaders{ETag: etag(c.Version)}}, nil
}

// UpdateCluster changes a cluster's settings.
func (s *Server) UpdateCluster(ctx context.Context, r api.UpdateClusterRequestObject) (api.UpdateClusterResponseObject, error) {
	b := r.Body
	c, err := s.store.UpdateCluster(ctx, r.ClusterId.String(), ifMatchVersion(r.Params.IfMatch), func(c backstop.Cluster) (backstop.Cluster, error) {
		if b.Name != nil {
			c.Name = *b.Name
		}
		if b.Description != nil {
			c.Description = *b.Description
		}
		if b.SwitchbackDefault != nil {
			c.SwitchbackDefault = string(*b.SwitchbackDefault)
		}
		if b.Fencing != nil {
			c.Fencing = string(*b.Fencing)
		}
		switch {
		case b.TimingProfile != nil:
			t, err := backstop.ResolveTiming(string(*b.TimingProfile), fromAPITiming(b.Timing), "/timing")
			if err != nil {
				return c, err
			}
			c.TimingProfile, c.Timing = string(*b.TimingProfile), t
		case b.Timing != nil:
			// New values alone make the profile custom.
			t, err := backstop.ResolveTiming(backstop.ProfileCustom, fromAPITiming(b.Timing), "/timing")
			if err != nil {
				return c, err
			}
			c.TimingProfile, c.Timing = backstop.ProfileCustom, t
		}
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return api.UpdateCluster200JSONResponse{Body: toAPICluster(c), Headers: api.UpdateCluster200ResponseHeaders{ETag: etag(c.Version)}}, nil
}

// DeleteCluster deletes a cluster and what it owns.
func (s *Server) DeleteCluster(ctx context.Context, r api.DeleteClusterRequestObject) (api.DeleteClusterResponseObject, error) {
	if err := s.store.DeleteCluster(ctx, r.ClusterId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteCluster204Response{}, nil
}

// CreateNode adds a node and returns its one-time enrollment token.
func (s *Server) CreateNode(ctx context.Context, r api.CreateNodeRequestObject) (api.CreateNodeResponseObject, error) {
	n, enr, err := s.store.CreateNode(ctx, backstop.Node{
		ClusterID:   r.ClusterId.String(),
		Name:        r.Body.Name,
		Description: deref(r.Body.Description, ""),
	}, s.keys.Fingerprint())
	if err != nil {
		return nil, err
	}
	a := toAPINode(n)
	return api.CreateNode201JSONResponse{
		Body: api.NodeCreated{
			Id: a.Id, ClusterId: a.ClusterId, Name: a.Name, Description: a.Description, State: a.State,
			Version: a.Version, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
			EnrollmentToken: enr.Token, EnrollmentExpiresAt: enr.ExpiresAt,
		},
		Headers: api.CreateNode201ResponseHeaders{ETag: etag(n.Version), Location: location("/v1/clusters/%s/nodes/%s", n.ClusterID, n.ID)},
	}, nil
}

// ListNodes lists a cluster's nodes.
func (s *Server) ListNodes(ctx context.Context, r api.ListNodesRequestObject) (api.ListNodesResponseObject, error) {
	ns, next, err := s.store.ListNodes(ctx, r.ClusterId.String(), page(r.Params.Limit, r.Params.Cursor))
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
func (s *Server) GetNode(ctx context.Context, r api.GetNodeRequestObject) (api.GetNodeResponseObject, error) {
	n, err := s.store.FindNodeByID(ctx, r.ClusterId.String(), r.NodeId.String())
	if err != nil {
		return nil, err
	}
	return api.GetNode200JSONResponse{Body: toAPINode(n), Headers: api.GetNode200ResponseHeaders{ETag: etag(n.Version)}}, nil
}

// UpdateNode renames a node or changes its description.
func (s *Server) UpdateNode(ctx context.Context, r api.UpdateNodeRequestObject) (api.UpdateNodeResponseObject, error) {
	n, err := s.store.UpdateNode(ctx, r.ClusterId.String(), r.NodeId.String(), ifMatchVersion(r.Params.IfMatch),
		backstop.NodeUpdate{Name: r.Body.Name, Description: r.Body.Description})
	if err != nil {
		return nil, err
	}
	return api.UpdateNode200JSONResponse{Body: toAPINode(n), Headers: api.UpdateNode200ResponseHeaders{ETag: etag(n.Version)}}, nil
}

// DeleteNode removes a node no hierarchy names.
func (s *Server) DeleteNode(ctx context.Context, r api.DeleteNodeRequestObject) (api.DeleteNodeResponseObject, error) {
	if err := s.store.DeleteNode(ctx, r.ClusterId.String(), r.NodeId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteNode204Response{}, nil
}

// CreatePath creates a path in both directions.
func (s *Server) CreatePath(ctx context.Context, r api.CreatePathRequestObject) (api.CreatePathResponseObject, error) {
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
	ps, err := s.store.CreatePath(ctx, r.ClusterId.String(),
		backstop.PathEnd{NodeID: b.A.NodeId.String(), Address: b.A.Address},
		backstop.PathEnd{NodeID: b.B.NodeId.String(), Address: b.B.Address},
		deref(b.Priority, 1))
	if err != nil {
		return nil, err
	}
	return api.CreatePath201JSONResponse{Forward: toAPIPath(ps[0]), Reverse: toAPIPath(ps[1])}, nil
}

// ListPaths lists a cluster's directed paths.
func (s *Server) ListPaths(ctx context.Context, r api.ListPathsRequestObject) (api.ListPathsResponseObject, error) {
	ps, next, err := s.store.ListPaths(ctx, r.ClusterId.String(), page(r.Params.Limit, r.Params.Cursor))
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
func (s *Server) GetPath(ctx context.Context, r api.GetPathRequestObject) (api.GetPathResponseObject, error) {
	p, err := s.store.FindPathByID(ctx, r.ClusterId.String(), r.PathId.String())
	if err != nil {
		return nil, err
	}
	return api.GetPath200JSONResponse{Body: toAPIPath(p), Headers: api.GetPath200ResponseHeaders{ETag: etag(p.Version())}}, nil
}

// DeletePath deletes both directions of a path.
func (s *Server) DeletePath(ctx context.Context, r api.DeletePathRequestObject) (api.DeletePathResponseObject, error) {
	if err := s.store.DeletePath(ctx, r.ClusterId.String(), r.PathId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeletePath204Response{}, nil
}

// CreateHierarchy creates a whole hierarchy atomically.
func (s *Server) CreateHierarchy(ctx context.Context, r api.CreateHierarchyRequestObject) (api.CreateHierarchyResponseObject, error) {
	h, err := s.store.CreateHierarchy(ctx, fromAPIHierarchySpec(r.ClusterId.String(), r.Body))
	if err != nil {
		return nil, err
	}
	return api.CreateHierarchy201JSONResponse{Body: toAPIHierarchy(h), Headers: api.CreateHierarchy201ResponseHeaders{
		ETag: etag(h.Version), Location: location("/v1/clusters/%s/hierarchies/%s", h.ClusterID, h.ID),
	}}, nil
}

// ListHierarchies lists a cluster's hierarchies.
func (s *Server) ListHierarchies(ctx context.Context, r api.ListHierarchiesRequestObject) (api.ListHierarchiesResponseObject, error) {
	hs, next, err := s.store.ListHierarchies(ctx, r.ClusterId.String(), page(r.Params.Limit, r.Params.Cursor))
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
func (s *Server) GetHierarchy(ctx context.Context, r api.GetHierarchyRequestObject) (api.GetHierarchyResponseObject, error) {
	h, err := s.store.FindHierarchyByID(ctx, r.ClusterId.String(), r.HierarchyId.String())
	if err != nil {
		return nil, err
	}
	return api.GetHierarchy200JSONResponse{Body: toAPIHierarchy(h), Headers: api.GetHierarchy200ResponseHeaders{ETag: etag(h.Version)}}, nil
}

// ReplaceHierarchy replaces a whole hierarchy definition.
func (s *Server) ReplaceHierarchy(ctx context.Context, r api.ReplaceHierarchyRequestObject) (api.ReplaceHierarchyResponseObject, error) {
	spec := fromAPIHierarchySpec(r.ClusterId.String(), r.Body)
	h, err := s.store.UpdateHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), ifMatchVersion(r.Params.IfMatch), backstop.HierarchyUpdate{
		Name: &spec.Name, Description: &spec.Description, ExclusivityGroup: &spec.ExclusivityGroup,
		Switchback: &spec.Switchback, Resources: spec.Resources, Priorities: spec.Priorities,
	})
	if err != nil {
		return nil, err
	}
	return api.ReplaceHierarchy200JSONResponse{Body: toAPIHierarchy(h), Headers: api.ReplaceHierarchy200ResponseHeaders{ETag: etag(h.Version)}}, nil
}

// UpdateHierarchy changes some fields of a hierarchy.
func (s *Server) UpdateHierarchy(ctx context.Context, r api.UpdateHierarchyRequestObject) (api.UpdateHierarchyResponseObject, error) {
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
	h, err := s.store.UpdateHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), ifMatchVersion(r.Params.IfMatch), u)
	if err != nil {
		return nil, err
	}
	return api.UpdateHierarchy200JSONResponse{Body: toAPIHierarchy(h), Headers: api.UpdateHierarchy200ResponseHeaders{ETag: etag(h.Version)}}, nil
}

// DeleteHierarchy deletes a hierarchy.
func (s *Server) DeleteHierarchy(ctx context.Context, r api.DeleteHierarchyRequestObject) (api.DeleteHierarchyResponseObject, error) {
	if err := s.store.DeleteHierarchy(ctx, r.ClusterId.String(), r.HierarchyId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteHierarchy204Response{}, nil
}

// CreateToken creates an API token; its secret is in this answer only.
func (s *Server) CreateToken(ctx context.Context, r api.CreateTokenRequestObject) (api.CreateTokenResponseObject, error) {
	t, secret, err := s.store.CreateToken(ctx, r.Body.Name, backstop.Role(r.Body.Role))
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
func (s *Server) ListTokens(ctx context.Context, r api.ListTokensRequestObject) (api.ListTokensResponseObject, error) {
	ts, next, err := s.store.ListTokens(ctx, page(r.Params.Limit, r.Params.Cursor))
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
func (s *Server) DeleteToken(ctx context.Context, r api.DeleteTokenRequestObject) (api.DeleteTokenResponseObject, error) {
	if err := s.store.DeleteToken(ctx, r.TokenId.String()); err != nil {
		return nil, err
	}
	return api.DeleteToken204Response{}, nil
}

// ListAudit lists the audit trail.
func (s *Server) ListAudit(ctx context.Context, r api.ListAuditRequestObject) (api.ListAuditResponseObject, error) {
	as, next, err := s.store.ListAudit(ctx, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListAudit200JSONResponse{Items: make([]api.AuditRecord, len(as)), NextCursor: nextCursor(next)}
	for i, a := range as {
		out.Items[i] = toAPIAudit(a)
	}
	return out, nil
}

var errNoBody = errors.New("request body is required")
