package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// fenceHandlers manage nodes' fence devices: a node's fence-agents
// program and its options. The secret options are sealed by the
// Deliverer's sealer (the one that seals webhook and SNMP secrets), bound
// to the node id, and never returned.
type fenceHandlers struct {
	store   FenceDeviceStore
	deliver Deliverer
	// dir is where fence agents must be.
	dir string
}

// DefaultFenceAgentsDir is where Debian's fence-agents installs its
// programs.
const DefaultFenceAgentsDir = "/usr/sbin"

// GetFenceDevice shows a node's fence device without its secret values.
func (fh *fenceHandlers) GetFenceDevice(ctx context.Context, r api.GetFenceDeviceRequestObject) (api.GetFenceDeviceResponseObject, error) {
	d, err := fh.store.FindFenceDevice(ctx, r.ClusterId.String(), r.NodeId.String())
	if err != nil {
		return nil, err
	}
	return api.GetFenceDevice200JSONResponse{Body: toAPIFenceDevice(d), Headers: api.GetFenceDevice200ResponseHeaders{ETag: etag(d.Version)}}, nil
}

// PutFenceDevice creates or replaces a node's fence device.
func (fh *fenceHandlers) PutFenceDevice(ctx context.Context, r api.PutFenceDeviceRequestObject) (api.PutFenceDeviceResponseObject, error) {
	dl, err := requireDeliverer(fh.deliver)
	if err != nil {
		return nil, err
	}
	b := r.Body
	nodeID := r.NodeId.String()
	params := map[string]string(deref(b.Params, api.FenceParams{}))
	v := &backstop.ValidationError{}
	if err := fh.checkFenceAgent(b.Agent); err != nil {
		v.Add("/agent", "%s", err)
	}
	backstop.ValidateFenceParams(v, "/params", params)
	var secrets map[string]string
	if b.SecretParams != nil {
		secrets = *b.SecretParams
		backstop.ValidateFenceParams(v, "/secret_params", secrets)
	}
	timeout := time.Duration(deref(b.TimeoutS, int(backstop.DefaultFenceTimeout/time.Second))) * time.Second
	if timeout < time.Second || timeout > backstop.MaxFenceTimeout {
		v.Add("/timeout_s", "must be between 1 and %d", int(backstop.MaxFenceTimeout/time.Second))
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	var sealed []byte
	if secrets != nil {
		plain, err := json.Marshal(secrets)
		if err != nil {
			return nil, err
		}
		sealed = dl.Seal(backstop.FenceSealID(nodeID), plain)
	}
	d, err := fh.store.PutFenceDevice(ctx, r.ClusterId.String(), nodeID, ifMatchVersion(r.Params.IfMatch), func(cur *backstop.FenceDevice) (backstop.FenceDevice, error) {
		next := backstop.FenceDevice{NodeID: nodeID, ClusterID: r.ClusterId.String(), Agent: b.Agent, Params: params, Timeout: timeout,
			SecretNames: slices.Sorted(maps.Keys(secrets)), SecretSealed: sealed}
		if secrets == nil && cur != nil {
			next.SecretNames, next.SecretSealed = cur.SecretNames, cur.SecretSealed
		}
		v := &backstop.ValidationError{}
		for _, k := range next.SecretNames {
			if _, ok := params[k]; ok {
				v.Add("/params/"+k, "%s is a secret option of this device; give it in secret_params only", k)
			}
		}
		return next, v.Err()
	})
	if err != nil {
		return nil, err
	}
	return api.PutFenceDevice200JSONResponse{Body: toAPIFenceDevice(d), Headers: api.PutFenceDevice200ResponseHeaders{ETag: etag(d.Version)}}, nil
}

// DeleteFenceDevice removes a node's fence device.
func (fh *fenceHandlers) DeleteFenceDevice(ctx context.Context, r api.DeleteFenceDeviceRequestObject) (api.DeleteFenceDeviceResponseObject, error) {
	if err := fh.store.DeleteFenceDevice(ctx, r.ClusterId.String(), r.NodeId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteFenceDevice204Response{}, nil
}

// checkFenceAgent says why agent cannot be run from the fence-agents
// directory, if it cannot: the name pattern keeps it inside the
// directory, and it must be an executable file there.
func (fh *fenceHandlers) checkFenceAgent(agent string) error {
	if !backstop.ValidFenceAgentName(agent) {
		return fmt.Errorf("%q is no fence agent name (^fence_[a-z0-9_]+$)", agent)
	}
	p := filepath.Join(fh.dir, agent)
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return fmt.Errorf("no fence agent %s in %s on this control plane (install fence-agents, or set --fence-agents-dir)", agent, fh.dir)
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

func toAPIFenceDevice(d backstop.FenceDevice) api.FenceDevice {
	names := d.SecretNames
	if names == nil {
		names = []string{}
	}
	return api.FenceDevice{NodeId: apiID(d.NodeID), Agent: d.Agent, Params: api.FenceParams(d.Params), SecretParamsSet: names,
		TimeoutS: int(d.Timeout / time.Second), LastFencedAt: d.LastFencedAt, Version: d.Version, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
}
