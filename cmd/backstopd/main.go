// Command backstopd is Backstop's control plane: the REST API over
// PostgreSQL. `backstopd` serves; `backstopd demo` starts a throwaway
// PostgreSQL, serves on it and creates a sample cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/backstop-ha/backstop/pki"
	"github.com/backstop-ha/backstop/server"
	"github.com/backstop-ha/backstop/server/failover"
	"github.com/backstop-ha/backstop/server/fencing"
	"github.com/backstop-ha/backstop/server/leader"
	"github.com/backstop-ha/backstop/server/notify"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
)

// Config is backstopd's configuration: flags, with environment defaults.
type Config struct {
	Listen         string
	DatabaseURL    string
	LogFormat      string
	LogLevel       string
	BootstrapToken string
	MaxBodyBytes   int64
	// SecretKey seals the command-signing keys stored in PostgreSQL.
	SecretKey []byte
	// Delivery configures event delivery to webhooks and SNMP managers.
	Delivery notify.Config
	// FenceAgentsDir holds the fence agents fence devices name.
	FenceAgentsDir string
	// PprofListen, when set, serves net/http/pprof there (a separate
	// listener, never the API's: profiles are for operators on the host).
	PprofListen string
	// TLS: the server certificate and key (reloaded when they change on
	// disk) and the CA certificate enrollment tokens pin. InsecureHTTP
	// serves plain HTTP instead, only when asked for.
	TLSCert, TLSKey, TLSCA string
	InsecureHTTP           bool
}

// *store.Store is the persistence of every area of the HTTP layer.
var _ server.Store = (*store.Store)(nil)

func main() {
	args := os.Args[1:]
	demo := len(args) > 0 && args[0] == "demo"
	if demo {
		args = args[1:]
	}
	cfg, err := parseFlags(args, os.Getenv, demo)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "backstopd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := newLogger(cfg, os.Stderr)
	if demo {
		err = runDemo(ctx, cfg, log, os.Stdout)
	} else {
		err = run(ctx, cfg, log, nil)
	}
	if err != nil {
		log.Error("backstopd stopped", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, getenv func(string) string, demo bool) (Config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	name := "backstopd"
	if demo {
		name = "backstopd demo"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var c Config
	fs.StringVar(&c.Listen, "listen", env("BACKSTOP_LISTEN", "127.0.0.1:8080"), "address to serve the API on (BACKSTOP_LISTEN)")
	if !demo {
		fs.StringVar(&c.DatabaseURL, "database-url", env("BACKSTOP_DATABASE_URL", ""), "PostgreSQL URL, postgres://user:pass@host:5432/db (BACKSTOP_DATABASE_URL)")
	}
	fs.StringVar(&c.LogFormat, "log-format", env("BACKSTOP_LOG_FORMAT", "text"), "log format: text or json (BACKSTOP_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", env("BACKSTOP_LOG_LEVEL", "info"), "log level: debug, info, warn, error (BACKSTOP_LOG_LEVEL)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "largest request body accepted")
	d := notify.DefaultConfig()
	fs.IntVar(&c.Delivery.MaxAttempts, "delivery-max-attempts", d.MaxAttempts, "retry budget: attempts per webhook or trap delivery before it is dead-lettered")
	fs.DurationVar(&c.Delivery.BackoffBase, "delivery-backoff", d.BackoffBase, "wait after a delivery's first failed attempt; doubles after each, with jitter")
	fs.DurationVar(&c.Delivery.BackoffMax, "delivery-backoff-max", d.BackoffMax, "longest wait between two attempts of a delivery")
	fs.DurationVar(&c.Delivery.AttemptTimeout, "delivery-timeout", d.AttemptTimeout, "time a webhook receiver has to answer one attempt")
	fs.IntVar(&c.Delivery.Workers, "delivery-workers", d.Workers, "deliveries made at once by this replica (each target one at a time)")
	fs.DurationVar(&c.Delivery.Retention, "delivery-retention", d.Retention, "how long finished webhook and trap deliveries stay in the delivery log before they are pruned (hourly, in batches)")
	fs.StringVar(&c.FenceAgentsDir, "fence-agents-dir", env("BACKSTOP_FENCE_AGENTS_DIR", server.DefaultFenceAgentsDir),
		"directory of the fence agents (Debian's fence-agents: fence_redfish, fence_ipmilan, ...) that fence devices name (BACKSTOP_FENCE_AGENTS_DIR)")
	fs.StringVar(&c.PprofListen, "pprof-listen", env("BACKSTOP_PPROF_LISTEN", ""), "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; off when empty (BACKSTOP_PPROF_LISTEN)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("BACKSTOP_TLS_CERT", ""), "PEM certificate (chain) the API is served with over HTTPS; reloaded when the file changes (BACKSTOP_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("BACKSTOP_TLS_KEY", ""), "PEM private key of --tls-cert; reloaded with it (BACKSTOP_TLS_KEY)")
	fs.StringVar(&c.TLSCA, "tls-ca", env("BACKSTOP_TLS_CA", ""), "PEM certificate of the CA that issued --tls-cert: enrollment tokens pin it, so agents keep trusting the server across certificate renewals; it is sent with the chain (BACKSTOP_TLS_CA)")
	fs.BoolVar(&c.InsecureHTTP, "insecure-http", envBool(getenv, "BACKSTOP_INSECURE_HTTP"), "serve plain HTTP instead of HTTPS: tokens and agent credentials cross the network in clear; for a loopback address or a TLS-terminating proxy on the same host only (BACKSTOP_INSECURE_HTTP)")
	secretFile := fs.String("secret-key-file", env("BACKSTOP_SECRET_KEY_FILE", ""), "file holding the secret that seals the command-signing keys (BACKSTOP_SECRET_KEY_FILE; or the secret itself in BACKSTOP_SECRET_KEY)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n", name)
		if !demo {
			fmt.Fprintf(fs.Output(), "       backstopd demo [flags]   (throwaway PostgreSQL and a sample cluster)\n")
		}
		fmt.Fprintf(fs.Output(), "\nEnvironment: BACKSTOP_BOOTSTRAP_TOKEN creates an admin token with that secret when none exists.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.BootstrapToken = getenv("BACKSTOP_BOOTSTRAP_TOKEN")
	switch {
	case *secretFile != "":
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return c, fmt.Errorf("--secret-key-file: %w", err)
		}
		c.SecretKey = []byte(strings.TrimSpace(string(b)))
	case getenv("BACKSTOP_SECRET_KEY") != "":
		c.SecretKey = []byte(getenv("BACKSTOP_SECRET_KEY"))
	case !demo:
		return c, errors.New("--secret-key-file (or BACKSTOP_SECRET_KEY) is required: it seals the command-signing keys; create one with `openssl rand -base64 32 > /etc/backstop/secret.key`")
	}
	switch {
	case c.InsecureHTTP && (c.TLSCert != "" || c.TLSKey != ""):
		return c, errors.New("--insecure-http and --tls-cert/--tls-key exclude each other")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return c, errors.New("--tls-cert and --tls-key go together")
	case c.TLSCA != "" && c.TLSCert == "" && !demo:
		return c, errors.New("--tls-ca needs --tls-cert and --tls-key")
	case !demo && !c.InsecureHTTP && c.TLSCert == "":
		return c, errors.New("--tls-cert and --tls-key (or BACKSTOP_TLS_CERT and BACKSTOP_TLS_KEY) are required: backstopd serves HTTPS; " +
			"--insecure-http serves plain HTTP instead, for a loopback address only")
	}
	if !demo && c.DatabaseURL == "" {
		return c, errors.New("--database-url (or BACKSTOP_DATABASE_URL) is required")
	}
	if c.Delivery.MaxAttempts < 1 || c.Delivery.BackoffBase <= 0 || c.Delivery.BackoffMax < c.Delivery.BackoffBase ||
		c.Delivery.AttemptTimeout <= 0 || c.Delivery.Workers < 1 || c.Delivery.Retention <= 0 {
		return c, errors.New("--delivery-*: attempts and workers must be at least 1, durations positive, --delivery-backoff-max at least --delivery-backoff")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c, fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return c, fmt.Errorf("--log-level: %w", err)
	}
	if c.BootstrapToken != "" && len(c.BootstrapToken) < 16 {
		return c, errors.New("BACKSTOP_BOOTSTRAP_TOKEN must be at least 16 characters")
	}
	return c, nil
}

// envBool reads a boolean environment variable; false when unset or not a
// boolean.
func envBool(getenv func(string) string, k string) bool {
	b, _ := strconv.ParseBool(getenv(k))
	return b
}

func newLogger(c Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel)) // checked by parseFlags
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run serves the API until ctx ends, then shuts down gracefully. ready, if
// not nil, receives the listening address once the server accepts
// requests.
func run(ctx context.Context, cfg Config, log *slog.Logger, ready chan<- string) error {
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := store.Open(openCtx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	version, err := store.Migrate(openCtx, st.Pool())
	if err != nil {
		return err
	}
	log.Info("database schema ready", "version", version)
	secret, err := st.EnsureBootstrapToken(openCtx, cfg.BootstrapToken)
	if err != nil {
		return fmt.Errorf("bootstrap token: %w", err)
	}
	switch {
	case secret != "" && cfg.BootstrapToken != "":
		log.Info("created the admin token given in BACKSTOP_BOOTSTRAP_TOKEN")
	case secret != "":
		// Printed once, on the first start only; it is stored as a hash.
		fmt.Fprintf(os.Stderr, "\nFirst start: an admin API token was created. It is shown only now:\n\n    %s\n\n", secret)
	}
	latest, err := store.LatestMigration()
	if err != nil {
		return err
	}
	sealKey, err := signing.SecretKeyFromBytes(cfg.SecretKey)
	if err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	keys, err := signing.Open(openCtx, st, sealKey)
	if err != nil {
		return err
	}
	log.Info("command signing key ready", "fingerprint", keys.Fingerprint())
	// Event delivery gets a pool of its own: slow receivers never hold
	// the connections the API and the engine need.
	dst, err := store.OpenSized(openCtx, cfg.DatabaseURL, int32(cfg.Delivery.Workers)+4)
	if err != nil {
		return err
	}
	defer dst.Close()
	snmpEngine, err := dst.StartSNMPEngine(openCtx)
	if err != nil {
		return fmt.Errorf("SNMP engine: %w", err)
	}
	log.Info("SNMPv3 engine ready", "engine_id", fmt.Sprintf("%x", snmpEngine.ID), "boots", snmpEngine.Boots)
	sealer, err := notify.NewSealer(cfg.SecretKey)
	if err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prometheus.WrapRegistererWith(prometheus.Labels{"pool": "api"}, registry).MustRegister(st.PoolCollector())
	prometheus.WrapRegistererWith(prometheus.Labels{"pool": "delivery"}, registry).MustRegister(dst.PoolCollector())
	dcfg := cfg.Delivery
	dcfg.Pool, dcfg.Store, dcfg.Sealer, dcfg.Logger, dcfg.Registry = dst.Pool(), dst, sealer, log, registry
	delivery, err := notify.New(dcfg)
	if err != nil {
		return err
	}
	var certs *pki.Reloader
	if !cfg.InsecureHTTP {
		certs, err = pki.NewReloader(pki.ReloaderConfig{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CAFile: cfg.TLSCA, Logger: log.With("component", "tls")})
		if err != nil {
			return err
		}
		leaf := certs.Leaf()
		log.Info("TLS certificate ready", "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames, "ip_addresses", fmt.Sprint(leaf.IPAddresses),
			"not_after", leaf.NotAfter, "pinned_ca_sha256", certs.Pin())
		if cfg.TLSCA == "" {
			log.Warn("no --tls-ca: enrollment tokens pin the last certificate of --tls-cert; if that is the server certificate itself, agents enrolled before a renewal stop trusting the server")
		}
	}
	scfg := server.Config{Store: st, Keyring: keys, Logger: log, MaxBodyBytes: cfg.MaxBodyBytes, SchemaVersion: latest,
		Registry: registry, Deliverer: delivery, FenceAgentsDir: cfg.FenceAgentsDir}
	if certs != nil {
		scfg.TLSPin, scfg.AgentClientCert = certs.Pin, true
	}
	// The engine passes at once when something changed (see
	// server.Config.OnChange); it is made after the server, which it
	// reports fences to.
	var poke atomic.Pointer[failover.Engine]
	scfg.OnChange = func(clusterID string) {
		if e := poke.Load(); e != nil {
			e.PokeCluster(clusterID)
		}
	}
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	engine := &failover.Engine{Store: st, Sign: keys.Sign, Log: log.With("component", "engine"),
		Fencer: &fencing.Runner{Dir: cfg.FenceAgentsDir, Open: sealer.Open}, OnFence: srv.ObserveFence}
	poke.Store(engine)
	elector := leader.New(leader.Config{
		Store:     leader.FromStore[*store.LeaderSession](st),
		ReplicaID: replicaID(),
		Address:   ln.Addr().String(),
		Version:   backstopVersion,
		Logger:    log,
		Lead:      engine.Run,
	})
	// Background work stops after the HTTP server drained: with a context
	// of its own, not the serving one.
	bgCtx, stopBackground := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { srv.Run(bgCtx) })
	bg.Go(func() { srv.RunEvents(bgCtx) })
	bg.Go(func() { elector.Run(bgCtx) })
	if err := delivery.Start(bgCtx); err != nil {
		stopBackground()
		bg.Wait()
		return fmt.Errorf("start event delivery: %w", err)
	}
	defer func() {
		// Deliveries in flight get a few seconds to end; the rest stay
		// queued for the next start or another replica.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := delivery.Stop(ctx); err != nil {
			log.Warn("stop event delivery", "err", err)
		}
		stopBackground()
		bg.Wait()
	}()
	if cfg.PprofListen != "" {
		pln, err := net.Listen("tcp", cfg.PprofListen)
		if err != nil {
			return fmt.Errorf("--pprof-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		ps := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = ps.Serve(pln) }()
		defer ps.Close()
		log.Info("serving Go profiles", "addr", pln.Addr().String())
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      90 * time.Second, // long polls wait up to 60 s; PUT maintenance?wait=true extends its own (server.extendWriteDeadline)
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(srv.CloseStreams)
	errc := make(chan error, 1)
	if certs != nil {
		// ServeTLS adds HTTP/2 to the configuration's protocols.
		hs.TLSConfig = pki.ServerConfig(certs)
		go func() { errc <- hs.ServeTLS(ln, "", "") }()
		log.Info("serving the Backstop API over HTTPS", "addr", ln.Addr().String())
	} else {
		go func() { errc <- hs.Serve(ln) }()
		warnInsecure(log, ln.Addr())
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Shutdown gets a fresh context: the serving one is already done, and
	// in-flight requests deserve a few seconds to finish.
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// version is backstopd's version, shown in the control plane view.
const backstopVersion = "0.1.0"

// replicaID names this process among the replicas: host name and a random
// suffix, so a restarted replica is a new one.
func replicaID() string {
	host, _ := os.Hostname()
	return host + "-" + store.NewSecret("")[:6]
}

// warnInsecure says, at every start, what plain HTTP gives away.
func warnInsecure(log *slog.Logger, addr net.Addr) {
	loopback := false
	if t, ok := addr.(*net.TCPAddr); ok {
		loopback = t.IP.IsLoopback()
	}
	msg := "serving the Backstop API over plain HTTP (--insecure-http): API tokens and agent credentials cross the network in clear, agents present no client certificate"
	if !loopback {
		msg += "; and the address is not a loopback one: anyone on the network can read them"
	}
	log.Warn(msg, "addr", addr.String())
}

// hostURL turns a listen address into a URL a browser can open, https://
// unless plain is set.
func hostURL(addr string, plain bool) string {
	scheme := "https://"
	if plain {
		scheme = "http://"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return scheme + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + host + ":" + port
}
