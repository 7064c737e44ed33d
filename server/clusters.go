package server

import (
	"context"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// clusterHandlers manage clusters.
type clusterHandlers struct {
	store ClusterStore
}

// CreateCluster creates a cluster with the defaults of the design brief.
func (ch *clusterHandlers) CreateCluster(ctx context.Context, r api.CreateClusterRequestObject) (api.CreateClusterResponseObject, error) {
	b := r.Body
	profile := string(deref(b.TimingProfile, api.TimingProfile(backstop.ProfileLAN)))
	t, err := backstop.ResolveTiming(profile, fromAPITiming(b.Timing), "/timing")
	if err != nil {
		return nil, err
	}
	c, err := ch.store.CreateCluster(ctx, backstop.Cluster{
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
func (ch *clusterHandlers) ListClusters(ctx context.Context, r api.ListClustersRequestObject) (api.ListClustersResponseObject, error) {
	cs, next, err := ch.store.ListClusters(ctx, named(page(r.Params.Limit, r.Params.Cursor), r.Params.Name))
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
func (ch *clusterHandlers) GetCluster(ctx context.Context, r api.GetClusterRequestObject) (api.GetClusterResponseObject, error) {
	c, err := ch.store.FindClusterByID(ctx, r.ClusterId.String())
	if err != nil {
		return nil, err
	}
	return api.GetCluster200JSONResponse{Body: toAPICluster(c), Headers: api.GetCluster200ResponseHeaders{ETag: etag(c.Version)}}, nil
}

// UpdateCluster changes a cluster's settings.
func (ch *clusterHandlers) UpdateCluster(ctx context.Context, r api.UpdateClusterRequestObject) (api.UpdateClusterResponseObject, error) {
	b := r.Body
	c, err := ch.store.UpdateCluster(ctx, r.ClusterId.String(), ifMatchVersion(r.Params.IfMatch), func(c backstop.Cluster) (backstop.Cluster, error) {
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
func (ch *clusterHandlers) DeleteCluster(ctx context.Context, r api.DeleteClusterRequestObject) (api.DeleteClusterResponseObject, error) {
	if err := ch.store.DeleteCluster(ctx, r.ClusterId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteCluster204Response{}, nil
}
