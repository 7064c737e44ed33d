package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
)

// validatingTransport checks every response against the contract before
// handing it on, and reports a violation as an error of the test that made
// the request (carried by the request's context, see withT), else of t.
type validatingTransport struct {
	base http.RoundTripper
	t    testing.TB
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	t := v.t
	if rt, ok := req.Context().Value(tKey{}).(testing.TB); ok {
		t = rt
	}
	what := fmt.Sprintf("%s %s -> %d", req.Method, req.URL.RequestURI(), resp.StatusCode)
	if resp.StatusCode >= 500 && !(req.URL.Path == "/readyz" && resp.StatusCode == http.StatusServiceUnavailable) {
		t.Errorf("server error: %s: %s", what, body)
	}
	if err := checkContract(req, resp, body); err != nil {
		t.Errorf("response violates %s: %s: %v\nbody: %s", specPath, what, err, body)
	}
	return resp, nil
}

// checkContract validates one response with kin-openapi against the
// operation the request names. A request that names no operation (unknown
// path, method not allowed) can only be checked for being a Problem.
func checkContract(req *http.Request, resp *http.Response, body []byte) error {
	route, params, err := env.router.FindRoute(req)
	if err != nil {
		return checkProblemShape(resp, body)
	}
	// kin-openapi accepts any status a default response covers; the
	// contract promises more: every status below 500 an operation answers
	// is declared by code, so that generated clients type it.
	if resp.StatusCode < 500 && route.Operation.Responses.Status(resp.StatusCode) == nil {
		return fmt.Errorf("status %d is not declared for operation %s (only its default response covers it)", resp.StatusCode, route.Operation.OperationID)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route, Options: env.options,
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: env.options,
	}
	return openapi3filter.ValidateResponse(req.Context(), in)
}

// checkProblemShape checks a response is an application/problem+json
// Problem whose status is the HTTP status.
func checkProblemShape(resp *http.Response, body []byte) error {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "application/problem+json" {
		return fmt.Errorf("Content-Type %q, want application/problem+json", resp.Header.Get("Content-Type"))
	}
	var p problem
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("body is not a Problem: %w", err)
	}
	if p.Type == "" || p.Title == "" || p.Status != resp.StatusCode {
		return fmt.Errorf("problem has type %q, title %q, status %d; want all set and status %d", p.Type, p.Title, p.Status, resp.StatusCode)
	}
	return nil
}

// client speaks to one backstopd with plain net/http and hand-written
// JSON, never the generated client: the wire format is what is tested.
type client struct {
	base   string
	secret string // default bearer token; "" for none
	http   *http.Client
}

func newClient(t *testing.T, base, secret string) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: env.caPool}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{
		base:   base,
		secret: secret,
		http:   &http.Client{Transport: &validatingTransport{base: tr, t: t}, Timeout: 30 * time.Second},
	}
}

// plainClient is an HTTP client trusting env.ca, without the contract
// check (for streams).
func plainClient(t *testing.T) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: env.caPool}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// withClientCert returns a client that presents cert as its TLS client
// certificate (a test standing in for an agent).
func (c *client) withClientCert(cert *tls.Certificate) *client {
	vt := c.http.Transport.(*validatingTransport)
	tr := vt.base.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	cc := *c
	cc.http = &http.Client{Transport: &validatingTransport{base: tr, t: vt.t}, Timeout: c.http.Timeout}
	return &cc
}

// as returns a client with another default token.
func (c *client) as(secret string) *client {
	cc := *c
	cc.secret = secret
	return &cc
}

// reqOpt changes a request before it is sent.
type reqOpt func(*http.Request)

// header sets (or, with v empty, removes) a request header.
func header(k, v string) reqOpt {
	return func(r *http.Request) {
		if v == "" {
			r.Header.Del(k)
			return
		}
		r.Header.Set(k, v)
	}
}

// ifMatch sends If-Match.
func ifMatch(etag string) reqOpt { return header("If-Match", etag) }

// idempotencyKey sends Idempotency-Key.
func idempotencyKey(k string) reqOpt { return header("Idempotency-Key", k) }

// noAuth sends no Authorization header.
func noAuth() reqOpt { return header("Authorization", "") }

// response is a whole HTTP response.
type response struct {
	what   string // "METHOD /path -> status" for messages
	status int
	header http.Header
	body   []byte
}

// do sends one request. body is nil (none), a string or []byte (sent as
// is, as application/json) or any other value (marshalled to JSON).
func (c *client) do(t testing.TB, method, path string, body any, opts ...reqOpt) *response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal request body: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(withT(t.Context(), t), method, c.base+path, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.secret)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &response{
		what:   fmt.Sprintf("%s %s -> %d", method, path, resp.StatusCode),
		status: resp.StatusCode,
		header: resp.Header,
		body:   raw,
	}
}

// want reports (as an error) a status other than status; it returns
// whether the status was right.
func (r *response) want(t testing.TB, status int) bool {
	t.Helper()
	if r.status != status {
		t.Errorf("%s, want %d; body: %s", r.what, status, r.body)
		return false
	}
	return true
}

// must stops the test unless the status is status: for steps the rest of
// the test builds on.
func (r *response) must(t testing.TB, status int) *response {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s, want %d; body: %s", r.what, status, r.body)
	}
	return r
}

// decode unmarshals the body into v, failing the test when it cannot.
func (r *response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s: decode body into %T: %v\nbody: %s", r.what, v, err, r.body)
	}
}

// problem checks the response is an RFC 9457 problem with the status of
// the response, a type, a title and a detail, and returns it.
func (r *response) problem(t testing.TB) problem {
	t.Helper()
	mt, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	if mt != "application/problem+json" {
		t.Errorf("%s: Content-Type %q, want application/problem+json", r.what, r.header.Get("Content-Type"))
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Errorf("%s: body is not a problem: %v\nbody: %s", r.what, err, r.body)
		return p
	}
	if p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Errorf("%s: problem lacks type, title or detail: %s", r.what, r.body)
	}
	if p.Status != r.status {
		t.Errorf("%s: problem status %d, want the HTTP status %d", r.what, p.Status, r.status)
	}
	return p
}

// locations lists the problem's errors[].location.
func (p problem) locations() []string {
	out := make([]string, len(p.Errors))
	for i, e := range p.Errors {
		out[i] = e.Location
	}
	return out
}

// page is one page of any list.
type page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// listAll reads every page of a list (limit 500) and returns the items.
func listAll[T any](t testing.TB, c *client, path string) []T {
	t.Helper()
	var all []T
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("GET %s: more than 1000 pages; the cursor does not advance", path)
		}
		q := url.Values{"limit": {"500"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var p page[T]
		c.do(t, http.MethodGet, path+"?"+q.Encode(), nil).must(t, http.StatusOK).decode(t, &p)
		all = append(all, p.Items...)
		if p.NextCursor == nil {
			return all
		}
		cursor = *p.NextCursor
	}
}

// sameJSON fails t unless got and want marshal to the same JSON: a
// field-by-field comparison that prints both sides.
func sameJSON(t testing.TB, what string, got, want any) bool {
	t.Helper()
	g, err1 := json.MarshalIndent(got, "", "  ")
	w, err2 := json.MarshalIndent(want, "", "  ")
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: marshal: %v %v", what, err1, err2)
	}
	if !bytes.Equal(g, w) {
		t.Errorf("%s differs\n got: %s\nwant: %s", what, g, w)
		return false
	}
	return true
}

// hasAll reports whether every string of want is in got.
func hasAll(got, want []string) bool {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

// The wire types below are written by hand from openapi/backstop.yaml, on
// purpose independent of the generated code.

type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail"`
	Instance  string       `json:"instance,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []fieldError `json:"errors,omitempty"`
}

type fieldError struct {
	Location string `json:"location"`
	Message  string `json:"message"`
}

type timing struct {
	HeartbeatMS          int `json:"heartbeat_ms"`
	LeaseTTLMS           int `json:"lease_ttl_ms"`
	ServerGraceMS        int `json:"server_grace_ms"`
	PathHeartbeatMS      int `json:"path_heartbeat_ms"`
	PathDeadAfter        int `json:"path_dead_after"`
	QuickCheckIntervalMS int `json:"quick_check_interval_ms"`
	DeepCheckIntervalMS  int `json:"deep_check_interval_ms"`
}

type clusterJSON struct {
	ID                string    `json:"id"`
	Name              string    `json:"name"`
	Description       string    `json:"description"`
	TimingProfile     string    `json:"timing_profile"`
	Timing            timing    `json:"timing"`
	SwitchbackDefault string    `json:"switchback_default"`
	Fencing           string    `json:"fencing"`
	Version           int64     `json:"version"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

type nodeJSON struct {
	ID          string    `json:"id"`
	ClusterID   string    `json:"cluster_id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	State       string    `json:"state"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

type nodeCreatedJSON struct {
	nodeJSON
	EnrollmentToken     string    `json:"enrollment_token"`
	EnrollmentExpiresAt time.Time `json:"enrollment_expires_at"`
}

type pathJSON struct {
	ID            string    `json:"id"`
	ClusterID     string    `json:"cluster_id"`
	LinkID        string    `json:"link_id"`
	ReverseID     string    `json:"reverse_id"`
	LocalNodeID   string    `json:"local_node_id"`
	LocalAddress  string    `json:"local_address"`
	RemoteNodeID  string    `json:"remote_node_id"`
	RemoteAddress string    `json:"remote_address"`
	Priority      int       `json:"priority"`
	CreatedAt     time.Time `json:"created_at"`
}

type pathPairJSON struct {
	Forward pathJSON `json:"forward"`
	Reverse pathJSON `json:"reverse"`
}

type checkJSON struct {
	IntervalMS int `json:"interval_ms"`
	TimeoutMS  int `json:"timeout_ms"`
}

type recoveryJSON struct {
	MaxRestarts int `json:"max_restarts"`
	WindowS     int `json:"window_s"`
}

type resourceJSON struct {
	Name          string         `json:"name"`
	Kind          string         `json:"kind"`
	Params        map[string]any `json:"params"`
	DependsOn     []string       `json:"depends_on"`
	QuickCheck    checkJSON      `json:"quick_check"`
	DeepCheck     checkJSON      `json:"deep_check"`
	LocalRecovery recoveryJSON   `json:"local_recovery"`
}

type priorityJSON struct {
	NodeID   string `json:"node_id"`
	Priority int    `json:"priority"`
}

type hierarchyJSON struct {
	ID               string         `json:"id"`
	ClusterID        string         `json:"cluster_id"`
	Name             string         `json:"name"`
	Description      string         `json:"description"`
	ExclusivityGroup string         `json:"exclusivity_group"`
	Switchback       string         `json:"switchback"`
	Resources        []resourceJSON `json:"resources"`
	Priorities       []priorityJSON `json:"priorities"`
	Version          int64          `json:"version"`
	CreatedAt        time.Time      `json:"created_at"`
	UpdatedAt        time.Time      `json:"updated_at"`
}

type tokenJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Prefix     string     `json:"prefix"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	Secret     string     `json:"secret,omitempty"`
}

type auditJSON struct {
	ID           int64          `json:"id"`
	At           time.Time      `json:"at"`
	Actor        string         `json:"actor"`
	ActorTokenID string         `json:"actor_token_id,omitempty"`
	Action       string         `json:"action"`
	TargetType   string         `json:"target_type"`
	TargetID     string         `json:"target_id"`
	ClusterID    string         `json:"cluster_id,omitempty"`
	Details      map[string]any `json:"details"`
}

type healthJSON struct {
	Status        string `json:"status"`
	SchemaVersion *int   `json:"schema_version,omitempty"`
}
