package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
)

// healthHandlers answer liveness, readiness, metrics, the contract and
// the control plane's replicas.
type healthHandlers struct {
	store    HealthStore
	log      *slog.Logger
	registry *prometheus.Registry
	// schema is the newest migration this binary knows.
	schema uint
}

// GetHealthz answers while the process is up.
func (hh *healthHandlers) GetHealthz(ctx context.Context, _ api.GetHealthzRequestObject) (api.GetHealthzResponseObject, error) {
	return api.GetHealthz200JSONResponse{Status: "ok"}, nil
}

// GetReadyz answers 200 when the database answers and has this binary's
// newest migration.
func (hh *healthHandlers) GetReadyz(ctx context.Context, _ api.GetReadyzRequestObject) (api.GetReadyzResponseObject, error) {
	unready := func(detail string) api.GetReadyzResponseObject {
		return api.GetReadyz503ApplicationProblemPlusJSONResponse{ProblemApplicationProblemPlusJSONResponse: api.ProblemApplicationProblemPlusJSONResponse{
			Type: problemBase + "not-ready", Title: "Service Unavailable", Status: 503, Detail: &detail,
		}}
	}
	if err := hh.store.Ping(ctx); err != nil {
		hh.log.WarnContext(ctx, "readiness: database unreachable", "err", err)
		return unready("database unreachable"), nil
	}
	v, clean, err := hh.store.SchemaVersion(ctx)
	switch {
	case err != nil:
		return unready("schema not migrated"), nil
	case !clean:
		return unready(fmt.Sprintf("schema version %d is dirty", v)), nil
	case v < hh.schema:
		return unready(fmt.Sprintf("schema version %d, this binary needs %d", v, hh.schema)), nil
	}
	return api.GetReadyz200JSONResponse{Status: "ok", SchemaVersion: ptr(int(v))}, nil
}

// GetMetrics renders the registry in the Prometheus text format.
func (hh *healthHandlers) GetMetrics(ctx context.Context, _ api.GetMetricsRequestObject) (api.GetMetricsResponseObject, error) {
	mfs, err := hh.registry.Gather()
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
func (hh *healthHandlers) GetOpenAPI(ctx context.Context, _ api.GetOpenAPIRequestObject) (api.GetOpenAPIResponseObject, error) {
	return api.GetOpenAPI200ApplicationyamlResponse{Body: bytes.NewReader(openapi.Spec), ContentLength: int64(len(openapi.Spec))}, nil
}

// GetControlPlane shows the replicas and the leader.
func (hh *healthHandlers) GetControlPlane(ctx context.Context, _ api.GetControlPlaneRequestObject) (api.GetControlPlaneResponseObject, error) {
	cp, err := hh.store.ControlPlane(ctx)
	if err != nil {
		return nil, err
	}
	out := api.GetControlPlane200JSONResponse{Term: cp.Term, LeaderSince: cp.LeaderSince}
	if cp.LeaderID != "" {
		out.LeaderId = ptr(cp.LeaderID)
	}
	out.Replicas = make([]struct {
		Address    string    `json:"address"`
		Id         string    `json:"id"`
		LastSeenAt time.Time `json:"last_seen_at"`
		Leader     bool      `json:"leader"`
		StartedAt  time.Time `json:"started_at"`
		Version    *string   `json:"version,omitempty"`
	}, len(cp.Replicas))
	for i, r := range cp.Replicas {
		out.Replicas[i].Address, out.Replicas[i].Id, out.Replicas[i].LastSeenAt = r.Address, r.ID, r.LastSeenAt
		out.Replicas[i].Leader, out.Replicas[i].StartedAt = r.Leader, r.StartedAt
		if r.Version != "" {
			out.Replicas[i].Version = ptr(r.Version)
		}
	}
	return out, nil
}
