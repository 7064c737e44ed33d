package server

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"regexp"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// heartbeatPath is the agents' heartbeat endpoint (operation
// agentHeartbeat in the contract).
const heartbeatPath = "/agent/v1/heartbeat"

// The heartbeat fast lane.
//
// Heartbeats are almost all the control plane's traffic (every agent,
// several times a second) and almost all alike. The general path reads
// each one three times (the contract's validator decodes it into maps,
// the NUL check decodes it again, the generated handler a third time into
// its struct) and matches the route with regular expressions; at 400
// agents that was a third of backstopd's CPU. The fast lane decodes the
// body once, strictly, and checks it against the contract's rules for a
// heartbeat by hand.
//
// It only ever says yes to what the general path would accept, and hands
// everything else over: a body it cannot decode, any rule it is not sure
// of, fences, an unusual content type or query. The general path then
// answers it exactly as it always did (the same 400, 413 or 415, the same
// problem). So the lane changes the cost of a good heartbeat, never the
// answer to a bad one: FuzzHeartbeatFastLane checks, for any body, that
// what the lane accepts the contract's validator accepts too and the
// generated handler decodes to the same heartbeat.
//
// Authentication, admission and the handler are the general path's own
// (authenticateAgent, admit, agentHandlers.AgentHeartbeat), as are the
// middlewares around the gate (request id, metrics, panic recovery).

// fastHeartbeat serves r if it is a heartbeat the lane can take. It
// answers done when it wrote the response (the heartbeat's answer or an
// authentication or admission error). Otherwise the caller serves next,
// which is r with its body restored, on the general path; release, when
// not nil, is the admission slot the lane took (the general path must not
// take a second one) and the caller frees it when the request is done.
func (s *Server) fastHeartbeat(w http.ResponseWriter, r *http.Request) (next *http.Request, release func(), done bool) {
	ctx := r.Context()
	if err := ctx.Err(); err != nil {
		s.writeError(w, r, err) // the agent gave up while this waited to run
		return r, nil, true
	}
	r = withClientKey(r)
	a, err := s.authenticateAgent(r)
	if err != nil {
		s.writeError(w, r, err)
		return r, nil, true
	}
	ctx = backstop.WithAgent(ctx, a)
	r = r.WithContext(ctx)
	eligible := r.Header.Get("Content-Type") == "application/json" && r.URL.RawQuery == "" && r.Header.Get("Idempotency-Key") == ""
	// The body is read before admission only when admit asks whether
	// it says something new (all slots busy and a comfortable lease):
	// then it costs a read and a decode more, but a report of a path
	// gone down is not shed.
	var (
		body    []byte
		readErr error
		read    bool
		hb      *api.AgentHeartbeatJSONRequestBody
		decoded bool
		content []byte
	)
	readBody := func() {
		if read {
			return
		}
		read = true
		if n := r.ContentLength; n > 0 && n <= s.maxBody {
			// Agents send the length: one buffer of that size, where
			// io.ReadAll grew one through several (7% of backstopd's
			// allocations at 1,000 agents). net/http ends the body at
			// the length; a short one is an error, answered by the
			// general path.
			body = make([]byte, n)
			var k int
			k, readErr = io.ReadFull(r.Body, body)
			body = body[:k]
		} else {
			body, readErr = io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
		}
		if readErr == nil {
			hb, decoded = decodeFastHeartbeat(body)
		}
	}
	news := func() bool {
		if !eligible {
			return true // the general path will see; not shed unread
		}
		readBody()
		if readErr != nil || !decoded {
			return true // a fence report, or anything unsure
		}
		content = reportDigest(hb)
		return !s.agentHandlers.leases.says(a.NodeID, content)
	}
	release, err = s.agentHandlers.admit(ctx, a.NodeID, news)
	if err != nil {
		s.writeError(w, r, err)
		return r, nil, true
	}
	if !eligible {
		return r, release, false
	}
	readBody()
	if readErr != nil {
		// Let the general path read it again (what was read, then the
		// rest) and answer the error as it always does.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		return r, release, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if !decoded {
		return r, release, false
	}
	// Served here, not by the router: name the route for the request
	// metrics and the access log as the router would.
	if rc := chi.RouteContext(ctx); rc != nil {
		rc.RoutePatterns = append(rc.RoutePatterns, heartbeatPath)
	}
	ctx = context.WithValue(ctx, fastLaneKey{}, fastLane{content: content})
	resp, err := s.agentHandlers.AgentHeartbeat(ctx, api.AgentHeartbeatRequestObject{Body: hb})
	if err == nil {
		err = resp.VisitAgentHeartbeatResponse(w)
	}
	if err != nil {
		s.writeError(w, r, err)
	}
	return r, release, true
}

// The fast lane's view of a heartbeat: every field a pointer or raw, so
// that a missing required field is seen as missing, not as its zero.
type (
	fastHB struct {
		ConfigVersion *int64          `json:"config_version"`
		Hierarchies   *[]fastHier     `json:"hierarchies"`
		Resources     *[]fastResource `json:"resources"`
		Paths         *[]fastPath     `json:"paths"`
		Fences        *[]struct{}     `json:"fences"`
		RestartHoldMs *int64          `json:"restart_hold_ms"`
		Instance      *string         `json:"instance"`
	}
	fastHier struct {
		HierarchyID *string `json:"hierarchy_id"`
		Epoch       *int64  `json:"epoch"`
		State       *string `json:"state"`
		Detail      *string `json:"detail"`
	}
	fastCheck struct {
		OK     *bool   `json:"ok"`
		At     *string `json:"at"`
		Detail *string `json:"detail"`
	}
	fastResource struct {
		HierarchyID   *string    `json:"hierarchy_id"`
		Resource      *string    `json:"resource"`
		Quick         *fastCheck `json:"quick"`
		Deep          *fastCheck `json:"deep"`
		Restarts      *int64     `json:"restarts"`
		CheckFailures *int64     `json:"check_failures"`
	}
	fastPath struct {
		PathID     *string  `json:"path_id"`
		PeerNodeID *string  `json:"peer_node_id"`
		State      *string  `json:"state"`
		RttMs      *float64 `json:"rtt_ms"`
		Loss       *float64 `json:"loss"`
	}
)

// Limits of the contract's Heartbeat schema (openapi/backstop.yaml);
// TestFastLaneLimitsMatchTheContract reads them from the document.
const (
	fastMaxHierarchies = 1024
	fastMaxResources   = 65536
	fastMaxPaths       = 4096
	fastMaxDetail      = 4096
	fastMaxResource    = 63
	fastMaxInstance    = 64
	fastMaxHold        = 120000
)

var (
	nullToken = []byte("null")
	nulEscape = []byte(`\u0000`)
	// dateTimeRE is the contract validator's own date-time format.
	dateTimeRE = regexp.MustCompile(openapi3.FormatOfStringDateTime)
)

// decodeFastHeartbeat decodes and checks body, or says no. It is strict
// where the general path might be lenient (any "null" anywhere, an
// escaped NUL, a name in another case, a duplicate or unknown name,
// invalid UTF-8, a number out of range: no), so a yes here is a yes
// there.
func decodeFastHeartbeat(body []byte) (*api.Heartbeat, bool) {
	if bytes.Contains(body, nullToken) || bytes.Contains(body, nulEscape) {
		return nil, false
	}
	var in fastHB
	// RejectUnknownMembers: additionalProperties is false throughout.
	// Names match exactly, duplicates and invalid UTF-8 are errors (the
	// package's defaults).
	if err := jsonv2.Unmarshal(body, &in, jsonv2.RejectUnknownMembers(true)); err != nil {
		return nil, false
	}
	if in.ConfigVersion == nil || *in.ConfigVersion < 0 || (in.Fences != nil && len(*in.Fences) > 0) {
		return nil, false
	}
	out := &api.Heartbeat{ConfigVersion: *in.ConfigVersion}
	if in.Fences != nil {
		out.Fences = &[]api.FenceReport{}
	}
	if h := in.RestartHoldMs; h != nil {
		if *h < 0 || *h > fastMaxHold {
			return nil, false
		}
		out.RestartHoldMs = ptr(int(*h))
	}
	if i := in.Instance; i != nil {
		if !instanceOK(*i) {
			return nil, false
		}
		out.Instance = ptr(*i)
	}
	if in.Hierarchies != nil {
		if len(*in.Hierarchies) > fastMaxHierarchies {
			return nil, false
		}
		hs := make([]api.HierarchyReport, 0, len(*in.Hierarchies))
		for _, h := range *in.Hierarchies {
			id, ok := fastUUID(h.HierarchyID)
			if !ok || h.Epoch == nil || *h.Epoch < 0 || h.State == nil || !api.PlacementState(*h.State).Valid() || !detailOK(h.Detail) {
				return nil, false
			}
			hs = append(hs, api.HierarchyReport{HierarchyId: id, Epoch: *h.Epoch, State: api.PlacementState(*h.State), Detail: h.Detail})
		}
		out.Hierarchies = &hs
	}
	if in.Resources != nil {
		if len(*in.Resources) > fastMaxResources {
			return nil, false
		}
		rs := make([]api.ResourceHealth, 0, len(*in.Resources))
		for _, x := range *in.Resources {
			id, ok := fastUUID(x.HierarchyID)
			if !ok || x.Resource == nil || len(*x.Resource) > fastMaxResource ||
				(x.Restarts != nil && *x.Restarts < 0) || (x.CheckFailures != nil && *x.CheckFailures < 0) {
				return nil, false
			}
			rh := api.ResourceHealth{HierarchyId: id, Resource: *x.Resource, CheckFailures: x.CheckFailures}
			if x.Restarts != nil {
				rh.Restarts = ptr(int(*x.Restarts))
			}
			if rh.Quick, ok = fastCheckResult(x.Quick); !ok {
				return nil, false
			}
			if rh.Deep, ok = fastCheckResult(x.Deep); !ok {
				return nil, false
			}
			rs = append(rs, rh)
		}
		out.Resources = &rs
	}
	if in.Paths != nil {
		if len(*in.Paths) > fastMaxPaths {
			return nil, false
		}
		ps := make([]api.PathReport, 0, len(*in.Paths))
		for _, p := range *in.Paths {
			id, ok1 := fastUUID(p.PathID)
			peer, ok2 := fastUUID(p.PeerNodeID)
			if !ok1 || !ok2 || p.State == nil || !api.PathReportState(*p.State).Valid() {
				return nil, false
			}
			pr := api.PathReport{PathId: id, PeerNodeId: peer, State: api.PathReportState(*p.State)}
			if v := p.RttMs; v != nil {
				if *v < 0 || *v > math.MaxFloat32 {
					return nil, false
				}
				pr.RttMs = ptr(float32(*v))
			}
			if v := p.Loss; v != nil {
				if *v < 0 || *v > 1 {
					return nil, false
				}
				pr.Loss = ptr(float32(*v))
			}
			ps = append(ps, pr)
		}
		out.Paths = &ps
	}
	return out, true
}

func fastCheckResult(c *fastCheck) (*api.CheckResult, bool) {
	if c == nil {
		return nil, true
	}
	if c.OK == nil || c.At == nil || !detailOK(c.Detail) || !dateTimeRE.MatchString(*c.At) {
		return nil, false
	}
	at, err := time.Parse(time.RFC3339Nano, *c.At)
	if err != nil {
		return nil, false
	}
	return &api.CheckResult{Ok: *c.OK, At: at, Detail: c.Detail}, true
}

// detailOK: the contract counts characters; counting bytes is stricter.
func detailOK(d *string) bool { return d == nil || len(*d) <= fastMaxDetail }

// instanceOK is the contract's ^[A-Za-z0-9._-]+$, 1 to 64 long.
func instanceOK(s string) bool {
	if len(s) == 0 || len(s) > fastMaxInstance {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// fastUUID takes what the contract's uuid format takes (RFC 9562, as
// hyphenated hex, with a version 1 to 8 and the RFC variant), except the
// nil and max UUIDs, which it leaves to the general path.
func fastUUID(s *string) (uuid.UUID, bool) {
	if s == nil || len(*s) != 36 {
		return uuid.UUID{}, false
	}
	v := *s
	for i := 0; i < 36; i++ {
		c := v[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return uuid.UUID{}, false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return uuid.UUID{}, false
			}
		}
	}
	if v[14] < '1' || v[14] > '8' || !bytes.ContainsRune([]byte("89abAB"), rune(v[19])) {
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(v)
	return id, err == nil
}
