// Package server is Backstop's HTTP layer: it implements the strict server
// interface generated from openapi/backstop.yaml, validates every request
// against that document, authenticates API tokens, answers every error as
// RFC 9457 problem+json, and exposes Prometheus metrics. It depends on the
// domain package cluster and on a Store interface, never on package store:
// cmd/backstopd joins the two.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
)

// Store is what the HTTP layer needs from persistence. Methods return the
// errors of package cluster: ErrNotFound, ErrConflict, ErrInvalid (often a
// *backstop.ValidationError), ErrPreconditionFailed, ErrLimit and
// ErrUnauthenticated.
type Store interface {
	Ping(ctx context.Context) error
	SchemaVersion(ctx context.Context) (uint, bool, error)

	Authenticate(ctx context.Context, secret string) (backstop.Token, error)
	CreateToken(ctx context.Context, name string, role backstop.Role) (backstop.Token, string, error)
	ListTokens(ctx context.Context, p backstop.Page) ([]backstop.Token, string, error)
	DeleteToken(ctx context.Context, id string) error
	ListAudit(ctx context.Context, p backstop.Page) ([]backstop.AuditRecord, string, error)

	CreateCluster(ctx context.Context, c backstop.Cluster) (backstop.Cluster, error)
	FindClusterByID(ctx context.Context, id string) (backstop.Cluster, error)
	ListClusters(ctx context.Context, p backstop.Page) ([]backstop.Cluster, string, error)
	UpdateCluster(ctx context.Context, id string, ifMatch *int64, change func(backstop.Cluster) (backstop.Cluster, error)) (backstop.Cluster, error)
	DeleteCluster(ctx context.Context, id string, ifMatch *int64) error

	CreateNode(ctx context.Context, n backstop.Node, keyFingerprint string) (backstop.Node, backstop.Enrollment, error)
	FindNodeByID(ctx context.Context, clusterID, id string) (backstop.Node, error)
	ListNodes(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Node, string, error)
	UpdateNode(ctx context.Context, clusterID, id string, ifMatch *int64, u backstop.NodeUpdate) (backstop.Node, error)
	DeleteNode(ctx context.Context, clusterID, id string, ifMatch *int64) error

	CreatePath(ctx context.Context, clusterID string, a, b backstop.PathEnd, priority int) ([2]backstop.Path, error)
	FindPathByID(ctx context.Context, clusterID, id string) (backstop.Path, error)
	ListPaths(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Path, string, error)
	DeletePath(ctx context.Context, clusterID, id string, ifMatch *int64) error

	CreateHierarchy(ctx context.Context, h backstop.Hierarchy) (backstop.Hierarchy, error)
	FindHierarchyByID(ctx context.Context, clusterID, id string) (backstop.Hierarchy, error)
	ListHierarchies(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Hierarchy, string, error)
	UpdateHierarchy(ctx context.Context, clusterID, id string, ifMatch *int64, u backstop.HierarchyUpdate) (backstop.Hierarchy, error)
	DeleteHierarchy(ctx context.Context, clusterID, id string, ifMatch *int64) error

	ListSigningKeys(ctx context.Context) ([]backstop.SealedKey, error)
	Enroll(ctx context.Context, token string, publicKey []byte, facts backstop.HostFacts) (backstop.Node, string, error)
	AuthenticateAgent(ctx context.Context, credential string) (backstop.AgentIdentity, error)
	RecordHeartbeat(ctx context.Context, a backstop.AgentIdentity, r backstop.AgentReport) (backstop.HeartbeatAck, error)
	AgentConfig(ctx context.Context, a backstop.AgentIdentity) (backstop.AgentConfig, error)
	ListenCommands(ctx context.Context, wake func(nodeID string)) error
	PlaceHierarchy(ctx context.Context, clusterID, hierarchyID, kind, nodeID string, sign backstop.Signer) (backstop.Operation, error)
	FindOperation(ctx context.Context, id string) (backstop.Operation, error)
	NextCommands(ctx context.Context, nodeID string) ([]backstop.SignedCommand, error)
	RecordCommandResult(ctx context.Context, a backstop.AgentIdentity, commandID string, r backstop.CommandOutcome) (backstop.CommandEffect, error)
	ExpireCommands(ctx context.Context, resultGrace time.Duration) (int, error)
	ListCommands(ctx context.Context, clusterID, nodeID string, p backstop.Page) ([]backstop.CommandInfo, string, error)

	ClusterStatus(ctx context.Context, clusterID string) (backstop.ClusterStatus, error)
	StartMove(ctx context.Context, term int64, m backstop.MoveRequest, sign backstop.Signer) (backstop.Incident, *backstop.Operation, error)
	SetMaintenance(ctx context.Context, clusterID, nodeID string, on bool) (backstop.Node, error)
	ClearFailedMark(ctx context.Context, clusterID, hierarchyID, nodeID string) error
	LastDecision(ctx context.Context, hierarchyID string) (backstop.DecisionRecord, bool, error)
	FailedMarks(ctx context.Context, hierarchyID string) ([]backstop.FailedMark, error)
	ListIncidents(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Incident, string, error)
	OperationsDone(ctx context.Context, ids []string) (bool, error)
	ListEvents(ctx context.Context, clusterID string, after int64, typ, minSeverity string, limit int) ([]backstop.Event, error)
	ListenEvents(ctx context.Context, fn func(backstop.EventSignal)) error

	CreateTarget(ctx context.Context, t backstop.Target) (backstop.Target, error)
	FindTarget(ctx context.Context, kind, id string) (backstop.Target, error)
	ListTargets(ctx context.Context, kind string, p backstop.Page) ([]backstop.Target, string, error)
	UpdateTarget(ctx context.Context, kind, id string, ifMatch *int64, change func(backstop.Target) (backstop.Target, error)) (backstop.Target, error)
	DeleteTarget(ctx context.Context, kind, id string, ifMatch *int64) error
	ListDeliveries(ctx context.Context, kind, targetID, status string, p backstop.Page) ([]backstop.Delivery, string, error)
	FindDelivery(ctx context.Context, kind, targetID, id string) (backstop.Delivery, error)
	Redeliver(ctx context.Context, kind, targetID, id string) (backstop.Delivery, error)
	SNMPEngine(ctx context.Context) (backstop.SNMPEngine, error)
	ControlPlane(ctx context.Context) (backstop.ControlPlane, error)

	FindFenceDevice(ctx context.Context, clusterID, nodeID string) (backstop.FenceDevice, error)
	PutFenceDevice(ctx context.Context, clusterID, nodeID string, ifMatch *int64, change func(cur *backstop.FenceDevice) (backstop.FenceDevice, error)) (backstop.FenceDevice, error)
	DeleteFenceDevice(ctx context.Context, clusterID, nodeID string, ifMatch *int64) error

	ClaimIdempotencyKey(ctx context.Context, tokenID, key, method, path string, hash []byte) (*backstop.StoredResponse, error)
	CompleteIdempotencyKey(ctx context.Context, tokenID, key string, r backstop.StoredResponse) error
	ReleaseIdempotencyKey(ctx context.Context, tokenID, key string) error
}

// Config configures a Server.
type Config struct {
	// Store is required.
	Store Store
	// Keyring signs commands; required.
	Keyring Keyring
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registry receives the server's metrics and is what /metrics shows.
	// Nil: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds request bodies (413 past it); default 1 MiB.
	MaxBodyBytes int64
	// SchemaVersion is the newest migration this binary knows; /readyz
	// answers 503 until the database has it.
	SchemaVersion uint
	// Deliverer seals target secrets and makes pings and test traps
	// (package notify). Without one, the webhook and SNMP target
	// endpoints answer 503.
	Deliverer Deliverer
	// StreamHeartbeat is the interval of the event stream's heartbeat
	// comments (default 15 s); StreamPoll, of its fallback reads of the
	// log when no notification came (default 5 s).
	StreamHeartbeat time.Duration
	StreamPoll      time.Duration
	// FenceAgentsDir is where fence agents named by fence devices must
	// be (default DefaultFenceAgentsDir).
	FenceAgentsDir string
}

// Server is the Backstop HTTP API. It is an http.Handler.
type Server struct {
	store      Store
	log        *slog.Logger
	registry   *prometheus.Registry
	router     routers.Router
	validation *openapi3filter.Options
	maxBody    int64
	schema     uint
	handler    http.Handler
	metrics    *httpMetrics
	keys       Keyring
	waiters    waiters
	deliver    Deliverer
	hub        eventHub
	heartbeat  time.Duration
	poll       time.Duration
	events     *prometheus.CounterVec
	fenceDir   string
	fences     *fenceMetrics
}

var _ api.StrictServerInterface = (*Server)(nil)

// New builds the server: middleware, the request gate and the generated
// routes, with every default error handler of the generated code replaced
// by one that writes problem+json.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Store is required")
	}
	if cfg.Keyring == nil {
		return nil, errNoKeyring
	}
	s := &Server{
		store:     cfg.Store,
		log:       cfg.Logger,
		registry:  cfg.Registry,
		maxBody:   cfg.MaxBodyBytes,
		schema:    cfg.SchemaVersion,
		keys:      cfg.Keyring,
		deliver:   cfg.Deliverer,
		heartbeat: cfg.StreamHeartbeat,
		poll:      cfg.StreamPoll,
		fenceDir:  cfg.FenceAgentsDir,
	}
	if s.fenceDir == "" {
		s.fenceDir = DefaultFenceAgentsDir
	}
	if s.heartbeat <= 0 {
		s.heartbeat = 15 * time.Second
	}
	if s.poll <= 0 {
		s.poll = 5 * time.Second
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "api")
	if s.maxBody <= 0 {
		s.maxBody = 1 << 20
	}
	if s.registry == nil {
		s.registry = prometheus.NewRegistry()
		s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m, err := newHTTPMetrics(s.registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if s.fences, err = newFenceMetrics(s.registry); err != nil {
		return nil, err
	}
	s.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backstop_events_total",
		Help: "Events committed (by any replica) as this replica heard them (LISTEN/NOTIFY), by type and severity.",
	}, []string{"type", "severity"})
	if err := s.registry.Register(s.events); err != nil {
		return nil, err
	}

	doc, err := openapi.Load()
	if err != nil {
		return nil, err
	}
	doc.Servers = nil // match paths as they are, whatever host serves them
	if s.router, err = gorillamux.NewRouter(doc); err != nil {
		return nil, fmt.Errorf("server: build router: %w", err)
	}
	s.validation = &openapi3filter.Options{
		MultiError:         true,
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, // the gate authenticates first
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
		},
	}

	r := chi.NewRouter()
	r.Use(s.requestID, s.observe, s.recoverer, s.gate)
	strict := api.NewStrictHandlerWithOptions(s, nil, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc:  s.badRequest,
		ResponseErrorHandlerFunc: s.writeError,
	})
	api.HandlerWithOptions(strict, api.ChiServerOptions{BaseRouter: r, ErrorHandlerFunc: s.badRequest})
	// The gate answers unknown routes first; these only back it up.
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, http.StatusNotFound, "not-found", "no API endpoint at "+r.URL.Path, nil)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, http.StatusMethodNotAllowed, "method-not-allowed", r.Method+" is not allowed on "+r.URL.Path, nil)
	})
	s.handler = r
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

type requestIDKey struct{}

var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// requestID takes a sane X-Request-Id from the client or makes one, and
// echoes it in the response.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !requestIDRE.MatchString(id) {
			id = uuid.Must(uuid.NewV7()).String()
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// recoverer turns a panic into a logged 500 problem instead of a dropped
// connection.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// observe logs each request and records its metrics.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		d := time.Since(start)
		s.metrics.observe(r.Method, route, ww.Status(), d)
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", ww.Status()),
			slog.Duration("duration", d), slog.String("request_id", requestIDFrom(r.Context())))
	})
}
