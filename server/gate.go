package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/backstop-ha/backstop"
)

// roleExtension names, on each operation of the contract, the role it
// needs ("public" for none). Authorization is read from the document so
// the contract stays the single source of truth.
const roleExtension = "x-backstop-role"

// gate runs in front of the generated handlers, in the order a client
// should learn about its mistakes: unknown endpoint (404/405), missing or
// bad credential (401), role too low (403), body too large (413), wrong
// content type (415), request not matching the contract or holding text
// the store cannot keep (400), then Idempotency-Key replay.
func (s *Server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Heartbeats first: most of the traffic, see fastHeartbeat.
		var admitted func()
		if r.Method == http.MethodPost && r.URL.Path == heartbeatPath {
			var done bool
			r, admitted, done = s.fastHeartbeat(w, r)
			if admitted != nil {
				defer admitted()
			}
			if done {
				return
			}
		}
		route, params, err := s.router.FindRoute(r)
		if err != nil {
			s.routeError(w, r, err)
			return
		}
		op := route.Operation
		r = withClientKey(r)
		ctx := r.Context()
		extendWriteDeadline(w, op)
		need, _ := op.Extensions[roleExtension].(string)
		switch need {
		case "public":
		case "agent":
			if err := ctx.Err(); err != nil {
				s.writeError(w, r, err) // the agent gave up while this waited to run
				return
			}
			a, err := s.authenticateAgent(r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			ctx = backstop.WithAgent(ctx, a)
			r = r.WithContext(ctx)
			if op.OperationID == "agentHeartbeat" && admitted == nil {
				// Admitted (or shed) before its body is read and
				// validated: that is most of what a heartbeat costs here.
				release, err := s.agentHandlers.admit(ctx, a.NodeID, nil)
				if err != nil {
					s.writeError(w, r, err)
					return
				}
				defer release()
			}
		default:
			actor, err := s.authenticate(r, backstop.Role(need))
			if err == nil {
				err = checkScope(actor, op.OperationID, params)
			}
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			ctx = backstop.WithActor(ctx, actor)
			r = r.WithContext(ctx)
		}

		var body []byte
		if r.Body != nil && r.Body != http.NoBody {
			body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) && op.RequestBody == nil {
					// Any body is wrong here, whatever its size: answer
					// what the contract declares for it.
					s.writeProblem(w, r, http.StatusBadRequest, "bad-request", r.Method+" "+route.Path+" takes no request body", nil)
					return
				}
				if errors.As(err, &mbe) {
					s.writeProblem(w, r, http.StatusRequestEntityTooLarge, "body-too-large",
						fmt.Sprintf("request body exceeds %d bytes", s.maxBody), nil)
					return
				}
				s.badRequest(w, r, fmt.Errorf("read request body: %w", err))
				return
			}
		}
		if len(body) > 0 && op.RequestBody == nil {
			s.writeProblem(w, r, http.StatusBadRequest, "bad-request", r.Method+" "+route.Path+" takes no request body", nil)
			return
		}
		if op.RequestBody != nil && (len(body) > 0 || r.Header.Get("Content-Type") != "") {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || op.RequestBody.Value.Content.Get(mt) == nil {
				s.writeProblem(w, r, http.StatusUnsupportedMediaType, "unsupported-media-type",
					fmt.Sprintf("Content-Type %q is not accepted; send application/json", r.Header.Get("Content-Type")), nil)
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))

		if fields := checkParameters(r, route, params); len(fields) > 0 {
			s.invalidRequest(w, r, fields)
			return
		}
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: s.validation}
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			s.invalidRequest(w, r, requestErrorFields(err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > 0 {
			if ve := checkJSONBody(body); ve != nil {
				status := http.StatusUnprocessableEntity
				if ve.Fields[0].Location == "/" {
					status = http.StatusBadRequest
				}
				s.writeProblem(w, r, status, "validation", ve.Error(), ve.Fields)
				return
			}
		}

		if key := r.Header.Get("Idempotency-Key"); key != "" && r.Method == http.MethodPost {
			s.idempotent(w, r, op, key, body, next)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// invalidRequest answers a request that does not match the contract with
// a 400 naming each offending field.
func (s *Server) invalidRequest(w http.ResponseWriter, r *http.Request, fields []backstop.FieldError) {
	detail := "the request does not match the API contract"
	if len(fields) > 0 {
		detail = fields[0].Location + ": " + fields[0].Message
		if len(fields) > 1 {
			detail += fmt.Sprintf(" (and %d more)", len(fields)-1)
		}
	}
	s.writeProblem(w, r, http.StatusBadRequest, "validation", detail, fields)
}

// routeError answers a request for no operation of the contract.
func (s *Server) routeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, routers.ErrMethodNotAllowed) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, _, err := s.router.FindRoute(probe); err == nil {
				allowed = append(allowed, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		s.writeProblem(w, r, http.StatusMethodNotAllowed, "method-not-allowed",
			fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")), nil)
		return
	}
	s.writeProblem(w, r, http.StatusNotFound, "not-found", "no API endpoint at "+r.URL.Path+"; see /openapi.yaml", nil)
}

// bearer returns the secret of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", fmt.Errorf("%w: send a credential as \"Authorization: Bearer <token>\"", backstop.ErrUnauthenticated)
	}
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		return "", fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", backstop.ErrUnauthenticated)
	}
	return strings.TrimSpace(secret), nil
}

// authenticateAgent resolves an agent credential.
func (s *Server) authenticateAgent(r *http.Request) (backstop.AgentIdentity, error) {
	secret, err := bearer(r)
	if err != nil {
		return backstop.AgentIdentity{}, err
	}
	key := sha256.Sum256([]byte(secret))
	a, ok := s.agentCreds.get(key, time.Now())
	if !ok {
		// Detached from the request, like the agent endpoints' store work:
		// an agent giving up must not cost a PostgreSQL connection.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
		defer cancel()
		a, err = s.gateStore.AuthenticateAgent(ctx, secret)
		if errors.Is(err, backstop.ErrUnauthenticated) {
			return a, fmt.Errorf("%w: the agent credential is unknown; enroll the agent again", backstop.ErrUnauthenticated)
		}
		if err != nil {
			return a, err
		}
		s.agentCreds.put(key, a, time.Now())
	}
	// Cached or not, the credential counts only with the client
	// certificate of the enrolled key.
	return a, s.checkClientKey(r.Context(), a)
}

// credCacheTTL is how long a resolved agent credential is believed
// without asking the database again. Agent credentials change only when
// their node is deleted (enrollment sets one, nothing rotates it); a
// deleted node's agent keeps passing the gate for at most this long, and
// finds no node behind it (its heartbeats are refused as not found, no
// command can be queued for it, its configuration is not found). Agents
// ask several times a second: 2,000 of them cost ~130 lookups a second.
const credCacheTTL = 15 * time.Second

// credCache remembers resolved agent credentials for credCacheTTL,
// keyed by the credential's SHA-256.
type credCache struct {
	// mu guards m.
	mu sync.Mutex
	m  map[[32]byte]credEntry
}

type credEntry struct {
	a     backstop.AgentIdentity
	until time.Time
}

func (c *credCache) get(key [32]byte, now time.Time) (backstop.AgentIdentity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.After(e.until) {
		return backstop.AgentIdentity{}, false
	}
	return e.a, true
}

func (c *credCache) put(key [32]byte, a backstop.AgentIdentity, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= 100_000 { // bounded: start over rather than grow
		c.m = map[[32]byte]credEntry{}
	}
	c.m[key] = credEntry{a: a, until: now.Add(credCacheTTL)}
}

// authenticate resolves the bearer token and checks its role.
func (s *Server) authenticate(r *http.Request, need backstop.Role) (backstop.Actor, error) {
	secret, err := bearer(r)
	if err != nil {
		return backstop.Actor{}, err
	}
	key := tokenKey(secret)
	t, gen, ok := s.tokens.get(key, time.Now())
	if !ok {
		t, err = s.tokens.lookup(r.Context(), key, gen, func() (backstop.Token, error) {
			// Shared by the requests waiting on it: no one request's
			// client giving up may fail the others.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
			defer cancel()
			return s.gateStore.Authenticate(ctx, secret)
		})
		if errors.Is(err, backstop.ErrUnauthenticated) {
			return backstop.Actor{}, fmt.Errorf("%w: the token is unknown or was revoked", backstop.ErrUnauthenticated)
		}
		if err != nil {
			return backstop.Actor{}, err
		}
	}
	if !need.Valid() {
		return backstop.Actor{}, fmt.Errorf("operation has no valid %s (%q)", roleExtension, need)
	}
	if !t.Role.Allows(need) {
		return backstop.Actor{}, fmt.Errorf("%w: token %q has role %s; this operation needs %s", backstop.ErrForbidden, t.Name, t.Role, need)
	}
	return backstop.Actor{TokenID: t.ID, Name: t.Name, Role: t.Role, Scope: t.Clusters}, nil
}

// scopedGlobalOps are the operations outside /v1/clusters/{cluster_id} a
// token scoped to clusters may call: its handler or store narrows them to
// the scope (listClusters, getOperation) or they show no cluster's data
// (getControlPlane).
var scopedGlobalOps = map[string]bool{"listClusters": true, "getOperation": true, "getControlPlane": true}

// checkScope keeps a token scoped to clusters inside them: another
// cluster is answered 404 as if it did not exist (no 403, which would
// tell that it does), and an operation spanning every cluster 403.
func checkScope(a backstop.Actor, opID string, params map[string]string) error {
	if a.Scope == nil {
		return nil
	}
	if id, ok := params["cluster_id"]; ok {
		if !a.Sees(strings.ToLower(id)) {
			return fmt.Errorf("cluster %s: %w", id, backstop.ErrNotFound)
		}
		return nil
	}
	if !scopedGlobalOps[opID] {
		return fmt.Errorf("%w: token %q is scoped to %d cluster(s); %s spans every cluster and needs an unscoped token", backstop.ErrForbidden, a.Name, len(a.Scope), opID)
	}
	return nil
}

var unsupportedRE = regexp.MustCompile(`^property "(.+)" is unsupported$`)

// requestErrorFields turns kin-openapi's validation errors into field
// errors: body fields as JSON pointers, parameters as "<in>.<name>". It
// looks at each error's own type before unwrapping, because a parameter's
// error wraps the schema errors that would otherwise lose its name.
func requestErrorFields(err error) []backstop.FieldError {
	var out []backstop.FieldError
	var walk func(err error, param string)
	walk = func(err error, param string) {
		switch e := err.(type) {
		case openapi3.MultiError:
			for _, x := range e {
				walk(x, param)
			}
		case *openapi3filter.RequestError:
			if e.Parameter != nil {
				param = e.Parameter.In + "." + e.Parameter.Name
			}
			if e.Err == nil {
				out = append(out, backstop.FieldError{Location: cmpOr(param, "/"), Message: cmpOr(e.Reason, "invalid")})
				return
			}
			walk(e.Err, param)
		case *openapi3.SchemaError:
			if param != "" {
				out = append(out, backstop.FieldError{Location: param, Message: e.Reason})
				return
			}
			ptr := e.JSONPointer()
			if m := unsupportedRE.FindStringSubmatch(e.Reason); m != nil {
				ptr = append(ptr, m[1]) // name the unknown field itself
			}
			out = append(out, backstop.FieldError{Location: "/" + strings.Join(ptr, "/"), Message: e.Reason})
		case *openapi3filter.ParseError:
			if param != "" {
				out = append(out, backstop.FieldError{Location: param, Message: e.Error()})
				return
			}
			out = append(out, backstop.FieldError{Location: "/", Message: "malformed JSON: " + e.Error()})
		default:
			if u := errors.Unwrap(err); u != nil {
				walk(u, param)
				return
			}
			out = append(out, backstop.FieldError{Location: cmpOr(param, "/"), Message: err.Error()})
		}
	}
	walk(err, "")
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkJSONBody refuses what the contract cannot express: data after the
// JSON value, and strings holding NUL characters (PostgreSQL cannot store
// them). It names the offending field.
func checkJSONBody(body []byte) *backstop.ValidationError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return backstop.Invalid("/", "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return backstop.Invalid("/", "unexpected data after the JSON value")
	}
	var find func(v any, ptr string) string
	find = func(v any, ptr string) string {
		switch x := v.(type) {
		case string:
			if strings.ContainsRune(x, 0) {
				return ptr
			}
		case []any:
			for i, e := range x {
				if p := find(e, fmt.Sprintf("%s/%d", ptr, i)); p != "" {
					return p
				}
			}
		case map[string]any:
			for k, e := range x {
				if strings.ContainsRune(k, 0) {
					return ptr
				}
				if p := find(e, ptr+"/"+k); p != "" {
					return p
				}
			}
		}
		return ""
	}
	if p := find(v, ""); p != "" {
		return backstop.Invalid(cmpOr(p, "/"), "must not contain NUL characters")
	}
	return nil
}

// idempotent runs a POST under an Idempotency-Key: the first request runs
// and its answer is stored; a repeat with the same method, path and body
// gets the stored answer; a repeat with another body is refused. The
// stored answer holds no secret: the fields the contract marks
// x-backstop-secret are stored (and replayed) empty.
func (s *Server) idempotent(w http.ResponseWriter, r *http.Request, op *openapi3.Operation, key string, body []byte, next http.Handler) {
	actor := backstop.ActorFrom(r.Context())
	if actor.TokenID == "" { // public operations have no POSTs; nothing to scope the key to
		next.ServeHTTP(w, r)
		return
	}
	sum := sha256.Sum256(body)
	stored, err := s.gateStore.ClaimIdempotencyKey(r.Context(), backstop.IdempotencyClaim{TokenID: actor.TokenID, Key: key, Method: r.Method, Path: r.URL.Path, BodyHash: sum[:]})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if stored != nil {
		for k, vs := range stored.Headers {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(stored.Status)
		_, _ = w.Write(stored.Body)
		return
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	// The key must not stay claimed when the handler panics or the
	// client goes away: finish with a context the request cannot cancel.
	done := false
	defer func() {
		if !done {
			_ = s.gateStore.ReleaseIdempotencyKey(context.WithoutCancel(r.Context()), actor.TokenID, key)
		}
	}()
	next.ServeHTTP(rec, r)
	ctx := context.WithoutCancel(r.Context())
	if rec.status >= 500 {
		err = s.gateStore.ReleaseIdempotencyKey(ctx, actor.TokenID, key)
	} else {
		hdr := map[string][]string{}
		for _, k := range []string{"Content-Type", "Etag", "Location"} {
			if v := rec.Header().Values(k); len(v) > 0 {
				hdr[k] = v
			}
		}
		err = s.gateStore.CompleteIdempotencyKey(ctx, actor.TokenID, key, backstop.StoredResponse{Status: rec.status, Headers: hdr, Body: redactSecrets(op, rec.status, rec.body.Bytes())})
	}
	done = true
	if err != nil {
		s.log.ErrorContext(ctx, "store idempotent response", "err", err, "request_id", requestIDFrom(ctx))
	}
}

// recorder copies a response while passing it through.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// secretExtension marks, in the contract, a response property that holds
// a secret shown once (a token, a signing secret, an enrollment token).
const secretExtension = "x-backstop-secret"

// redactSecrets returns body with every top-level property that the
// operation's response schema for status marks x-backstop-secret set to
// the empty string, for storing as an idempotent replay: a replay must not
// hand the secret out again, and the store must not keep it in clear. A
// body that is no JSON object is returned as it is.
func redactSecrets(op *openapi3.Operation, status int, body []byte) []byte {
	names := secretFields(op, status)
	if len(names) == 0 {
		return body
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return body
	}
	changed := false
	for _, n := range names {
		if _, ok := obj[n]; ok {
			obj[n] = json.RawMessage(`""`)
			changed = true
		}
	}
	if !changed {
		return body
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return body
	}
	return append(out, '\n')
}

// secretFields lists the top-level properties marked x-backstop-secret in
// the JSON schema of op's response for status, following allOf.
func secretFields(op *openapi3.Operation, status int) []string {
	if op == nil || op.Responses == nil {
		return nil
	}
	ref := op.Responses.Status(status)
	if ref == nil || ref.Value == nil {
		return nil
	}
	mt := ref.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		return nil
	}
	var names []string
	var walk func(s *openapi3.SchemaRef)
	walk = func(s *openapi3.SchemaRef) {
		if s == nil || s.Value == nil {
			return
		}
		for name, p := range s.Value.Properties {
			if p != nil && p.Value != nil && p.Value.Extensions[secretExtension] == true {
				names = append(names, name)
			}
		}
		for _, a := range s.Value.AllOf {
			walk(a)
		}
	}
	walk(mt.Schema)
	return names
}
