package server

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// etag renders a version as a strong entity tag.
func etag(version int64) *string {
	s := `"` + strconv.FormatInt(version, 10) + `"`
	return &s
}

// ifMatchVersion parses an If-Match header into a version. "*" (or no
// header) matches any version. A value this server never issued can match
// no version, so it gets a version that never exists (412 follows). So
// does a weak tag (W/"3"): If-Match compares strongly (RFC 9110 §13.1.1),
// and a weak tag never matches strongly.
func ifMatchVersion(h *string) *int64 {
	if h == nil {
		return nil
	}
	v := strings.TrimSpace(*h)
	if v == "*" || v == "" {
		return nil
	}
	never := int64(-1)
	if strings.HasPrefix(v, "W/") {
		return &never
	}
	n, err := strconv.ParseInt(strings.Trim(v, `"`), 10, 64)
	if err != nil {
		return &never
	}
	return &n
}

func page(limit *int, cursor *string) backstop.Page {
	p := backstop.Page{Limit: backstop.DefaultPageLimit}
	if limit != nil {
		p.Limit = *limit
	}
	if cursor != nil {
		p.Cursor = *cursor
	}
	return p
}

// named is p filtered to the object of name (when set).
func named(p backstop.Page, name *string) backstop.Page {
	if name != nil {
		p.Name = *name
	}
	return p
}

func nextCursor(c string) *string {
	if c == "" {
		return nil
	}
	return &c
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func apiID(id string) uuid.UUID { return uuid.MustParse(id) }

func optID(id string) *uuid.UUID {
	if id == "" {
		return nil
	}
	u := uuid.MustParse(id)
	return &u
}

func toAPITiming(t backstop.Timing) api.Timing {
	return api.Timing{
		HeartbeatMs: t.HeartbeatMS, LeaseTtlMs: t.LeaseTTLMS, ServerGraceMs: t.ServerGraceMS,
		PathHeartbeatMs: t.PathHeartbeatMS, PathDeadAfter: t.PathDeadAfter,
		QuickCheckIntervalMs: t.QuickCheckIntervalMS, DeepCheckIntervalMs: t.DeepCheckIntervalMS,
	}
}

func fromAPITiming(t *api.Timing) *backstop.Timing {
	if t == nil {
		return nil
	}
	return &backstop.Timing{
		HeartbeatMS: t.HeartbeatMs, LeaseTTLMS: t.LeaseTtlMs, ServerGraceMS: t.ServerGraceMs,
		PathHeartbeatMS: t.PathHeartbeatMs, PathDeadAfter: t.PathDeadAfter,
		QuickCheckIntervalMS: t.QuickCheckIntervalMs, DeepCheckIntervalMS: t.DeepCheckIntervalMs,
	}
}

func toAPICluster(c backstop.Cluster) api.Cluster {
	return api.Cluster{
		Id: apiID(c.ID), Name: c.Name, Description: c.Description,
		TimingProfile: api.TimingProfile(c.TimingProfile), Timing: toAPITiming(c.Timing),
		SwitchbackDefault: api.SwitchbackPolicy(c.SwitchbackDefault), Fencing: api.FencingPolicy(c.Fencing),
		Version: c.Version, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
}

func toAPINode(n backstop.Node) api.Node {
	out := api.Node{
		Id: apiID(n.ID), ClusterId: apiID(n.ClusterID), Name: n.Name, Description: n.Description,
		State: api.NodeState(n.State), Version: n.Version, CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt,
	}
	if n.Maintenance {
		out.Maintenance = ptr(true)
	}
	if a := n.Agent; a != nil {
		f := a.Facts
		facts := api.HostFacts{Hostname: f.Hostname, Os: f.OS, Arch: f.Arch, AgentVersion: f.AgentVersion}
		if f.Kernel != "" {
			facts.Kernel = ptr(f.Kernel)
		}
		if len(f.Interfaces) > 0 {
			ifs := make([]api.HostInterface, len(f.Interfaces))
			for i, x := range f.Interfaces {
				ifs[i] = api.HostInterface{Name: x.Name}
				if x.MAC != "" {
					ifs[i].Mac = ptr(x.MAC)
				}
				if len(x.Addresses) > 0 {
					ifs[i].Addresses = ptr(x.Addresses)
				}
			}
			facts.Interfaces = &ifs
		}
		out.Agent = &api.NodeAgent{EnrolledAt: a.EnrolledAt, LastHeartbeatAt: a.LastHeartbeatAt, Facts: facts, Report: reports.decode(n.ID, a.Report)}
	}
	return out
}

// toAPINodeReport picks what operators see of an agent's last heartbeat
// report: its paths and its resources' health. The report was validated
// against the contract when it arrived; one that no longer decodes (an
// older agent's) is left out rather than failing the read.
func toAPINodeReport(raw []byte) *api.NodeReport {
	if len(raw) == 0 {
		return nil
	}
	var hb struct {
		Paths     []api.PathReport     `json:"paths"`
		Resources []api.ResourceHealth `json:"resources"`
	}
	if json.Unmarshal(raw, &hb) != nil {
		return nil
	}
	out := &api.NodeReport{Paths: hb.Paths, Resources: hb.Resources}
	if out.Paths == nil {
		out.Paths = []api.PathReport{}
	}
	if out.Resources == nil {
		out.Resources = []api.ResourceHealth{}
	}
	return out
}

func toAPIPath(p backstop.Path) api.Path {
	return api.Path{
		Id: apiID(p.ID), ClusterId: apiID(p.ClusterID), LinkId: apiID(p.LinkID), ReverseId: apiID(p.ReverseID),
		LocalNodeId: apiID(p.LocalNodeID), LocalAddress: p.LocalAddress,
		RemoteNodeId: apiID(p.RemoteNodeID), RemoteAddress: p.RemoteAddress,
		Priority: p.Priority, CreatedAt: p.CreatedAt,
	}
}

func fromAPIResources(in []api.ResourceSpec) []backstop.Resource {
	out := make([]backstop.Resource, len(in))
	for i, r := range in {
		out[i] = backstop.Resource{
			Name:      r.Name,
			Kind:      string(r.Kind),
			Params:    deref(r.Params, nil),
			DependsOn: deref(r.DependsOn, nil),
		}
		if r.QuickCheck != nil {
			out[i].QuickCheck = &backstop.CheckSettings{IntervalMS: r.QuickCheck.IntervalMs, TimeoutMS: r.QuickCheck.TimeoutMs}
		}
		if r.DeepCheck != nil {
			out[i].DeepCheck = &backstop.CheckSettings{IntervalMS: r.DeepCheck.IntervalMs, TimeoutMS: r.DeepCheck.TimeoutMs}
		}
		if r.LocalRecovery != nil {
			out[i].LocalRecovery = &backstop.LocalRecovery{MaxRestarts: r.LocalRecovery.MaxRestarts, WindowS: r.LocalRecovery.WindowS}
		}
	}
	return out
}

func fromAPIPriorities(in []api.Priority) []backstop.Priority {
	out := make([]backstop.Priority, len(in))
	for i, p := range in {
		out[i] = backstop.Priority{NodeID: p.NodeId.String(), Priority: p.Priority}
	}
	return out
}

func fromAPIHierarchySpec(clusterID string, b *api.HierarchySpec) backstop.Hierarchy {
	return backstop.Hierarchy{
		ClusterID:        clusterID,
		Name:             b.Name,
		Description:      deref(b.Description, ""),
		ExclusivityGroup: deref(b.ExclusivityGroup, ""),
		Switchback:       string(deref(b.Switchback, "")),
		Resources:        fromAPIResources(b.Resources),
		Priorities:       fromAPIPriorities(b.Priorities),
	}
}

func toAPIHierarchy(h backstop.Hierarchy) api.Hierarchy {
	rs := make([]api.Resource, len(h.Resources))
	for i, r := range h.Resources {
		rs[i] = api.Resource{
			Name: r.Name, Kind: api.ResourceKind(r.Kind), Params: r.Params, DependsOn: r.DependsOn,
			QuickCheck:    api.CheckSettings{IntervalMs: r.QuickCheck.IntervalMS, TimeoutMs: r.QuickCheck.TimeoutMS},
			DeepCheck:     api.CheckSettings{IntervalMs: r.DeepCheck.IntervalMS, TimeoutMs: r.DeepCheck.TimeoutMS},
			LocalRecovery: api.LocalRecovery{MaxRestarts: r.LocalRecovery.MaxRestarts, WindowS: r.LocalRecovery.WindowS},
		}
	}
	ps := make([]api.Priority, len(h.Priorities))
	for i, p := range h.Priorities {
		ps[i] = api.Priority{NodeId: apiID(p.NodeID), Priority: p.Priority}
	}
	return api.Hierarchy{
		Id: apiID(h.ID), ClusterId: apiID(h.ClusterID), Name: h.Name, Description: h.Description,
		ExclusivityGroup: h.ExclusivityGroup, Switchback: api.SwitchbackPolicy(h.Switchback),
		Resources: rs, Priorities: ps, Version: h.Version, CreatedAt: h.CreatedAt, UpdatedAt: h.UpdatedAt,
		Placement: api.Placement{NodeId: optID(h.Placement.NodeID), Epoch: h.Placement.Epoch, State: api.PlacementState(h.Placement.State), UpdatedAt: h.Placement.UpdatedAt, Detail: placementDetail(h.Placement)},
	}
}

func placementDetail(p backstop.Placement) *string {
	if p.Detail == "" {
		return nil
	}
	return &p.Detail
}

func toAPIToken(t backstop.Token) api.Token {
	out := api.Token{Id: apiID(t.ID), Name: t.Name, Role: api.Role(t.Role), Prefix: t.Prefix, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt}
	if t.Clusters != nil {
		ids := make([]uuid.UUID, len(t.Clusters))
		for i, id := range t.Clusters {
			ids[i] = apiID(id)
		}
		out.Clusters = &ids
	}
	return out
}

func toAPIAudit(a backstop.AuditRecord) api.AuditRecord {
	return api.AuditRecord{
		Id: a.ID, At: a.At, Actor: a.Actor, ActorTokenId: optID(a.ActorTokenID), Action: a.Action,
		TargetType: a.TargetType, TargetId: a.TargetID, ClusterId: optID(a.ClusterID), Details: a.Details,
	}
}

func location(format string, args ...any) *string {
	s := fmt.Sprintf(format, args...)
	return &s
}

// validIP accepts an IPv4 or IPv6 address without a zone (PostgreSQL's
// inet has no zones, and a path address must not depend on one).
func validIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}
