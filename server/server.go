// Package server is Backstop's HTTP layer: it implements the strict server
// interface generated from openapi/backstop.yaml, validates every request
// against that document, authenticates API tokens, answers every error as
// RFC 9457 problem+json, and exposes Prometheus metrics. It depends on the
// domain package backstop and on per-area store interfaces (stores.go),
// never on package store: cmd/backstopd joins the two.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
	"github.com/backstop-ha/backstop/server/ui"
)

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
	// TLSPin, if set, returns the fingerprint of the CA certificate
	// (package pki) new enrollment tokens carry, so agents trust only
	// this control plane's TLS certificate.
	TLSPin func() string
	// AgentClientCert requires agents to present a TLS client certificate
	// of the key they enrolled with (see mtls.go); set when backstopd
	// serves TLS itself.
	AgentClientCert bool
	// OnChange, if set, is called when something the failover engine
	// reads may have changed: with the cluster's id for each event this
	// replica hears (any replica's), with "" (anything may have changed)
	// after each successful change an operator makes through this
	// replica and when the event listener restarted. The leader's engine
	// passes at once then and reads that cluster, or every cluster
	// (failover.Engine.PokeCluster, Poke), instead of waiting for its
	// idle interval.
	OnChange func(clusterID string)
}

// Server is the Backstop HTTP API. It is an http.Handler.
//
// The handlers of the generated strict server interface live in one type
// per area, each holding only the store interface it calls; Server embeds
// them all, so it implements api.StrictServerInterface, and adds what
// runs in front of them: request ids, logging and metrics, recovery, the
// gate (authentication, body checks, validation, idempotency) and
// problem+json.
//
// Handlers convert API types to domain types, call the store and convert
// back. They never build error bodies: a returned error reaches writeError
// through the strict server's ResponseErrorHandlerFunc.
type Server struct {
	healthHandlers
	clusterHandlers
	nodeHandlers
	pathHandlers
	hierarchyHandlers
	tokenHandlers
	agentHandlers
	placementHandlers
	eventHandlers
	webhookHandlers
	snmpHandlers
	fenceHandlers
	configHandlers

	// gateStore authenticates requests and keeps idempotent answers.
	gateStore  gateStore
	agentCreds credCache
	tokens     *tokenCache
	log        *slog.Logger
	router     routers.Router
	validation *openapi3filter.Options
	maxBody    int64
	handler    http.Handler
	metrics    *httpMetrics
	fences     *fenceMetrics
	// agentClientCert is Config.AgentClientCert.
	agentClientCert bool
	// onChange is Config.OnChange.
	onChange func(clusterID string)
}

// gateStore is what the gate needs: credentials and idempotency keys.
type gateStore interface {
	AuthStore
	IdempotencyStore
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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "api")
	registry := cfg.Registry
	if registry == nil {
		registry = prometheus.NewRegistry()
		registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	fenceDir := cfg.FenceAgentsDir
	if fenceDir == "" {
		fenceDir = DefaultFenceAgentsDir
	}
	heartbeat, poll := cfg.StreamHeartbeat, cfg.StreamPoll
	if heartbeat <= 0 {
		heartbeat = 15 * time.Second
	}
	if poll <= 0 {
		poll = 5 * time.Second
	}
	m, err := newHTTPMetrics(registry)
	if err != nil {
		return nil, err
	}
	fences, err := newFenceMetrics(registry)
	if err != nil {
		return nil, err
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backstop_events_total",
		Help: "Events committed (by any replica) as this replica heard them (LISTEN/NOTIFY), by type and severity.",
	}, []string{"type", "severity"})
	if err := registry.Register(events); err != nil {
		return nil, err
	}
	wake := &waiters{}
	tokens := &tokenCache{}
	s := &Server{
		healthHandlers:    healthHandlers{store: cfg.Store, log: log, registry: registry, schema: cfg.SchemaVersion},
		clusterHandlers:   clusterHandlers{store: cfg.Store},
		nodeHandlers:      nodeHandlers{store: cfg.Store, fingerprint: enrollPin(cfg.Keyring.Fingerprint, cfg.TLSPin)},
		pathHandlers:      pathHandlers{store: cfg.Store},
		hierarchyHandlers: hierarchyHandlers{store: cfg.Store},
		tokenHandlers:     tokenHandlers{store: cfg.Store, revoked: tokens.clear},
		agentHandlers:     agentHandlers{store: cfg.Store, log: log, keys: cfg.Keyring, waiters: wake, recovery: m.recovery, heartbeats: m.heartbeats, slots: make(chan struct{}, agentSlots), clientCert: cfg.AgentClientCert},
		placementHandlers: placementHandlers{store: cfg.Store, log: log, sign: cfg.Keyring.Sign, waiters: wake},
		eventHandlers:     eventHandlers{store: cfg.Store, log: log, heartbeat: heartbeat, poll: poll, events: events, onChange: cfg.OnChange},
		webhookHandlers:   webhookHandlers{store: cfg.Store, deliver: cfg.Deliverer},
		snmpHandlers:      snmpHandlers{store: cfg.Store, deliver: cfg.Deliverer},
		fenceHandlers:     fenceHandlers{store: cfg.Store, deliver: cfg.Deliverer, dir: fenceDir},
		configHandlers:    configHandlers{store: cfg.Store, deliver: cfg.Deliverer},
		gateStore:         cfg.Store,
		tokens:            tokens,
		log:               log,
		maxBody:           cfg.MaxBodyBytes,
		metrics:           m,
		fences:            fences,
		agentClientCert:   cfg.AgentClientCert,
		onChange:          cfg.OnChange,
	}
	if s.maxBody <= 0 {
		s.maxBody = 1 << 20
	}

	doc, err := openapi.Load()
	if err != nil {
		return nil, err
	}
	doc.Servers = nil // match paths as they are, whatever host serves them
	if s.router, err = newContractRouter(doc); err != nil {
		return nil, fmt.Errorf("server: build router: %w", err)
	}
	s.validation = contractValidation()

	r := chi.NewRouter()
	r.Use(s.requestID, s.observe, s.recoverer, s.gate)
	strict := api.NewStrictHandlerWithOptions(s, []api.StrictMiddlewareFunc{fastAnswers}, api.StrictHTTPServerOptions{
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
	s.handler = s.withConsole(r)
	return s, nil
}

// withConsole serves the web console (package ui) at /ui beside the API,
// outside the gate: its files are public, and everything it shows comes
// from the API with the operator's token. A browser asking for / is sent
// to it; API clients still get the problem+json 404.
func (s *Server) withConsole(apiHandler http.Handler) http.Handler {
	console := s.requestID(s.observe(s.recoverer(ui.Handler())))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, ui.Prefix):
			console.ServeHTTP(w, r)
		case r.URL.Path == "/" && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html"):
			http.Redirect(w, r, ui.Prefix, http.StatusFound)
		default:
			apiHandler.ServeHTTP(w, r)
		}
	})
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
		if s.onChange != nil && r.Method != http.MethodGet && ww.Status() < 400 && strings.HasPrefix(r.URL.Path, "/v1/") {
			s.onChange("")
		}
		level := slog.LevelInfo
		if ww.Status() < 400 && strings.HasPrefix(r.URL.Path, "/agent/") {
			// Every agent heartbeats several times a second: their
			// successful requests are in the metrics; a line each
			// would be most of the log (and of the server's work).
			level = slog.LevelDebug
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		s.log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", ww.Status()),
			slog.Duration("duration", d), slog.String("request_id", requestIDFrom(r.Context())))
	})
}

// Run runs the server's background work until ctx ends: the listener that
// wakes long polls for commands queued on any replica, and the sweeper
// that closes commands no agent will run.
func (s *Server) Run(ctx context.Context) { s.agentHandlers.run(ctx) }

var errNoKeyring = errors.New("server: Keyring is required")

// contractValidation is how the gate checks requests against the
// contract.
func contractValidation() *openapi3filter.Options {
	return &openapi3filter.Options{
		MultiError:         true,
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, // the gate authenticates first
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
		},
	}
}
