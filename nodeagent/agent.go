package nodeagent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/pki"
)

// Config is the agent's configuration. cmd/backstop-agent fills it from
// flags and the environment; start from DefaultConfig.
type Config struct {
	// Servers are the control plane's base URLs (replicas of backstopd).
	Servers []string
	// DataDir holds the key pair, the credential, the cached
	// configuration and the local state. It must survive reboots.
	DataDir string
	// EnrollToken is the one-time enrollment token; used only when the
	// data directory holds no identity yet.
	EnrollToken string
	// PathPort is the UDP port of path heartbeats on every node.
	PathPort int
	// MetricsListen is the address of /metrics; empty disables it.
	MetricsListen string
	// Watchdog is a watchdog device such as /dev/watchdog; empty
	// disables it. With FenceGuard the guard feeds it (cmd/backstop-agent
	// passes it in GuardArgs); without, the agent does while its loops
	// are healthy.
	Watchdog string
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
	// Version is the agent's version, sent at enrollment.
	Version string
	// StepTimeout bounds each kit Start or Stop of a command.
	StepTimeout time.Duration
	// FenceGuard starts (or joins) the node's fence guard, the process
	// that fences this node's hierarchies when the agent stops renewing
	// its lease: dead, stopped, hung or crash-looping (see guard.go).
	// cmd/backstop-agent turns it on; it needs the agent's own binary.
	FenceGuard bool
	// GuardArgs are extra arguments of `backstop-agent guard` (logging).
	GuardArgs []string
	// GuardLog is a file the guard appends its logs to; empty: the
	// agent's standard error (the journal, under systemd).
	GuardLog string
	// RestartHold is how long the control plane keeps this node's lease
	// (and so its hierarchies in place) after the agent stops cleanly,
	// so that a restart or an upgrade neither interrupts nor moves a
	// service. Zero disables it: a stop then leads to a failover once the
	// lease runs out.
	RestartHold time.Duration
	// CAFile holds the CA certificates that verify the control plane's
	// TLS certificate when the enrollment token pins none (tokens of a
	// control plane serving plain HTTP, or made before TLS); empty: the
	// system's. A pinned CA always wins.
	CAFile string
	// ShutdownGrace is how long a stopping agent lets running commands
	// finish before abandoning them (their hierarchies are then reported
	// failed by the next agent process).
	ShutdownGrace time.Duration

	// Test hooks.
	newInstance func(backstop.Resource, kit.Env) (kit.Instance, error)
	httpDoer    client.HttpRequestDoer
	pollWait    time.Duration
}

// DefaultConfig returns the defaults of every optional setting.
func DefaultConfig() Config {
	return Config{
		DataDir:       "/var/lib/backstop-agent",
		PathPort:      DefaultPathPort,
		MetricsListen: "127.0.0.1:9406",
		Version:       "dev",
		StepTimeout:   5 * time.Minute,
		ShutdownGrace: 10 * time.Second,
		RestartHold:   15 * time.Second,
	}
}

// Validate checks c.
func (c Config) Validate() error {
	if len(c.Servers) == 0 {
		return errors.New("at least one control plane URL is required (--server)")
	}
	for _, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("server %q is not an http(s) URL", s)
		}
	}
	if c.DataDir == "" {
		return errors.New("a data directory is required (--data-dir)")
	}
	if c.PathPort <= 0 || c.PathPort > 65535 {
		return fmt.Errorf("path port %d is out of range", c.PathPort)
	}
	if c.RestartHold < 0 || c.RestartHold > backstop.MaxRestartHold {
		return fmt.Errorf("restart hold must be between 0 and %s", backstop.MaxRestartHold)
	}
	if c.StepTimeout <= 0 || c.ShutdownGrace < 0 {
		return errors.New("step timeout must be positive and shutdown grace not negative")
	}
	return nil
}

// defaultTiming applies before the first configuration: the lan profile,
// whose heartbeat is 250 ms.
var defaultTiming = backstop.Profiles[backstop.ProfileLAN]

// Agent is backstop-agent: New prepares it from its data directory, Run
// enrolls if needed and runs its loops until the context ends.
type Agent struct {
	cfg Config
	log *slog.Logger
	met *metrics
	api *apiClient
	// tls verifies the control plane and presents the client certificate.
	tls    *transportTLS
	key    ed25519.PrivateKey
	keys   *keyring
	mem    *memory
	lease  *lease
	runner *runner
	// serverPlacement is the placement of each hierarchy in the last
	// configuration this process fetched from the control plane (nil
	// before the first); guarded by cfgMu.
	serverPlacement map[string]placementView
	paths           *pathManager
	results         *reporter
	fences          *fenceQueue
	live            *liveness
	wd              *watchdog
	// guard is the link to the fence guard; nil without one.
	guard *guardLink
	// instance names this agent process in its heartbeats, so that a
	// late heartbeat of this process cannot end its own restart hold.
	instance string

	startedAt        time.Time
	firstHeartbeat   chan struct{} // closed when the first heartbeat got an answer or failed
	firstAck         chan struct{} // closed at the first acknowledged heartbeat
	firstHBOnce      sync.Once
	firstAckOnce     sync.Once
	configKick       chan struct{}
	withholdWatchdog atomic.Bool
	// declaredDown is set by a heartbeat answer saying the control plane
	// had declared this node down, until an answer grants a lease again:
	// meanwhile the agent vouches for nothing to its guard.
	declaredDown atomic.Bool

	// idMu guards id.
	idMu sync.RWMutex
	id   *identity

	// cfgMu guards the fields below.
	cfgMu sync.RWMutex
	conf  *client.AgentConfig
	tim   backstop.Timing

	// workersMu guards workers and inflight.
	workersMu sync.Mutex
	workers   map[string]chan *envelope.Command
	// inflight are the commands accepted by this process whose result the
	// control plane does not have yet.
	inflight map[uuid.UUID]bool
	workerWG sync.WaitGroup
}

// New prepares an agent from cfg: it creates the data directory and the
// key pair if needed and loads everything persisted there. It contacts
// nothing.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.pollWait <= 0 {
		cfg.pollWait = 25 * time.Second
	}
	dir := cfg.DataDir
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, met: newMetrics(), lease: newLease(nil), live: newLiveness(time.Now),
		firstHeartbeat: make(chan struct{}), firstAck: make(chan struct{}), configKick: make(chan struct{}, 1),
		workers: map[string]chan *envelope.Command{}, inflight: map[uuid.UUID]bool{}, tim: defaultTiming}
	var err error
	if a.key, err = loadOrCreateKey(dir); err != nil {
		return nil, err
	}
	if a.keys, err = loadKeyring(dir, log.With(keyComponent, "keys")); err != nil {
		return nil, err
	}
	if a.mem, err = loadMemory(dir); err != nil {
		return nil, err
	}
	var id identity
	enrolled, err := loadJSON(filepath.Join(dir, fileIdentity), &id)
	if err != nil {
		return nil, err
	}
	pin := id.CAFingerprint
	if !enrolled && cfg.EnrollToken != "" {
		tok, err := parseEnrollToken(cfg.EnrollToken)
		if err != nil {
			return nil, err
		}
		pin = tok.CAFP
	}
	if a.tls, err = newTransportTLS(dir, pin, cfg.CAFile, a.key, "backstop-agent "+id.NodeName); err != nil {
		return nil, err
	}
	doerFor := a.tls.doer
	if cfg.httpDoer != nil {
		doerFor = func(string) (client.HttpRequestDoer, error) { return cfg.httpDoer, nil }
	}
	if a.api, err = newAPIClient(cfg.Servers, doerFor, cfg.Version, log.With(keyComponent, "api")); err != nil {
		return nil, err
	}
	if a.fences, err = loadFenceQueue(dir, log); err != nil {
		return nil, err
	}
	if a.results, err = loadReporter(dir, a.api, log.With(keyComponent, "results")); err != nil {
		return nil, err
	}
	a.results.onDone = func(id uuid.UUID) {
		a.workersMu.Lock()
		delete(a.inflight, id)
		a.workersMu.Unlock()
	}
	if enrolled {
		a.setIdentity(&id)
	}
	a.instance = strings.ReplaceAll(uuid.NewString(), "-", "")
	if cfg.FenceGuard {
		a.guard = newGuardLink(dir, log.With(keyComponent, "guard"), spawnGuard(dir, cfg.GuardArgs, cfg.GuardLog, log))
	}
	a.paths = newPathManager(log.With(keyComponent, "paths"), a.met, cfg.PathPort)
	a.runner = newRunner(dir, cfg.newInstance, log.With(keyComponent, "hierarchies"), a.met, a.timing, cfg.StepTimeout)
	a.runner.authority = a.authority
	a.runner.configStore = func(hierarchyID, resource string) kit.ConfigStore {
		hid, err := uuid.Parse(hierarchyID)
		if err != nil {
			return nil // not an id the control plane gave: no store
		}
		return &configStore{api: a.api, hid: hid, resource: resource}
	}
	if err := a.runner.load(); err != nil {
		return nil, err
	}
	var conf client.AgentConfig
	if ok, err := loadJSON(filepath.Join(dir, fileConfig), &conf); err != nil {
		log.Error("ignoring the cached configuration", keyErr, err)
	} else if ok {
		if err := a.checkConfig(&conf); err != nil {
			log.Error("ignoring the cached configuration", keyErr, err)
		} else {
			a.applyConfig(&conf, "cache")
		}
	}
	a.met.reg.MustRegister(newPathCollector(a.paths), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backstop_agent_lease_remaining_seconds",
		Help: "Time left on the node lease as the agent sees it (negative once expired).",
	}, func() float64 {
		rem, _ := a.lease.remaining()
		return rem.Seconds()
	}))
	return a, nil
}

func (a *Agent) identity() *identity {
	a.idMu.RLock()
	defer a.idMu.RUnlock()
	return a.id
}

func (a *Agent) setIdentity(id *identity) {
	a.idMu.Lock()
	a.id = id
	a.idMu.Unlock()
	a.api.setCredential(id.Credential)
}

// timing returns the timing in force.
func (a *Agent) timing() backstop.Timing {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return a.tim
}

// Run enrolls the agent if its data directory holds no identity yet, then
// heartbeats, executes commands, monitors, recovers, fences and exchanges
// path heartbeats until ctx ends. Stopping leaves every resource as it is:
// an agent restart must not take services down. It returns an error only
// when the agent cannot work at all (enrollment refused, data directory
// unusable).
func (a *Agent) Run(ctx context.Context) error {
	var metricsSrv *http.Server
	if a.cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", a.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		metricsSrv = &http.Server{Handler: metricsHandler(a.met.reg), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metricsSrv.Serve(ln) }()
		defer metricsSrv.Close()
		a.log.Info("serving metrics", "addr", ln.Addr().String())
	}
	return a.run(ctx)
}

func (a *Agent) run(ctx context.Context) error {
	if a.identity() == nil {
		id, err := a.enroll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting for the control plane
			}
			return err
		}
		a.setIdentity(id)
	} else if a.cfg.EnrollToken != "" {
		a.log.Info("already enrolled: the enrollment token is not used (remove identity.json from the data directory to enroll again)",
			keyNodeID, a.identity().NodeID)
	}
	if len(a.keys.snapshot()) == 0 {
		return fmt.Errorf("%s trusts no signing key: remove %s and enroll again", filepath.Join(a.cfg.DataDir, fileTrustedKeys), fileIdentity)
	}
	id := a.identity()
	rem, restored := a.lease.restore(a.cfg.DataDir)
	a.log.Info("agent started", keyEvent, eventStarted, keyNodeID, id.NodeID, keyClusterID, id.ClusterID,
		"node_name", id.NodeName, keyServer, a.api.server(), "version", a.cfg.Version,
		"lease_restored", restored, keyLeaseRemaining, rem.Milliseconds(), keyVersion, a.appliedVersion())

	a.startedAt = time.Now()
	// Commands get a context of their own: at shutdown they may finish
	// within the grace instead of being cut in the middle of a bring-up.
	opsCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	monCtx, cancelMon := context.WithCancel(ctx)
	defer cancelMon()
	a.runner.start(monCtx, opsCtx)

	// The watchdog is armed only now that the loops which feed it start
	// (enrollment may wait on the control plane for long), and disarmed
	// on the way out: a clean stop must not reboot the node; systemd
	// restarts the agent, which arms it again.
	// With a fence guard, the guard feeds the watchdog (it outlives the
	// agent: GuardArgs carry --watchdog); the agent does only without one.
	if a.cfg.Watchdog != "" && a.guard == nil {
		wd, err := openWatchdog(a.cfg.Watchdog)
		if err != nil {
			return err
		}
		a.wd = wd
		a.log.Info("watchdog armed", keyEvent, eventWatchdogOpened, "device", a.cfg.Watchdog)
		defer func() {
			// After a failed fencing the node must still reboot: close
			// without the magic character then.
			if err := wd.close(!a.withholdWatchdog.Load()); err != nil {
				a.log.Error("watchdog close", keyErr, err)
			}
		}()
	}

	// Liveness limits for the watchdog: generous for the loops that wait
	// on the network (a blackholed server is not a hung agent), tight for
	// the fence watcher, which must never stall.
	t := a.timing()
	n := time.Duration(len(a.cfg.Servers))
	a.live.register("heartbeat", n*10*time.Second+20*time.Second)
	a.live.register("fence", max(5*time.Second, 4*ms(t.HeartbeatMS)))
	a.live.register("paths", 30*time.Second)
	a.live.register("commands", n*(a.cfg.pollWait+15*time.Second)+30*time.Second)
	a.paths.beat = func() { a.live.beat("paths") }

	// Two groups of loops, so that a stop never leaves the fence guard
	// unfed: heartbeats and commands end with ctx; the fence watcher, the
	// paths, the guard link and the reporters run on until the restart
	// hold is in place and running commands had their grace (lateCtx),
	// or the guard would fence a node whose agent is merely stopping.
	lateCtx, stopLate := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLate()
	var early, late sync.WaitGroup
	spawn := func(wg *sync.WaitGroup, c context.Context, fs ...func(context.Context)) {
		for _, f := range fs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(c)
			}()
		}
	}
	spawn(&early, ctx, a.heartbeatLoop, a.commandsLoop)
	spawn(&late, lateCtx, a.fenceLoop, a.paths.run, a.configLoop, a.results.run)
	if a.guard != nil {
		spawn(&late, lateCtx, a.guard.run)
	}
	<-ctx.Done()
	early.Wait()
	cancelMon()
	// The heartbeat loop finished its last request (heartbeats are not
	// cut by ctx), so the hold is the newest heartbeat the control plane
	// gets from this process.
	a.announceRestart()

	// Let running commands and recoveries finish (bounded), then abandon
	// them: resources are never stopped because the agent stops.
	a.workersMu.Lock()
	for h, ch := range a.workers {
		close(ch)
		delete(a.workers, h)
	}
	a.workersMu.Unlock()
	done := make(chan struct{})
	go func() {
		a.workerWG.Wait()
		a.runner.wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(a.cfg.ShutdownGrace):
		a.log.Warn("shutting down with commands or recoveries still running; they are abandoned")
		cancelOps()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	if err := a.lease.save(a.cfg.DataDir); err != nil {
		a.log.Error("cannot save the lease for the next agent process", keyErr, err)
	}
	stopLate()
	late.Wait()
	rem, _ = a.lease.remaining()
	a.log.Info("agent stopped; resources left as they are", keyEvent, eventStopped, keyLeaseRemaining, rem.Milliseconds(),
		keyHierarchies, a.runner.activeIDs())
	return nil
}

// metricsHandler serves /metrics from reg.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// enroll exchanges the enrollment token for an identity, retrying while
// the control plane is unreachable. It stores nothing unless the answer
// carries the signing key the token's fingerprint names.
func (a *Agent) enroll(ctx context.Context) (*identity, error) {
	tok := a.cfg.EnrollToken
	if tok == "" {
		return nil, errors.New("not enrolled yet: give the node's enrollment token (--enroll-token or BACKSTOP_ENROLL_TOKEN)")
	}
	et, err := parseEnrollToken(tok)
	if err != nil {
		return nil, err
	}
	req := client.EnrollRequest{EnrollmentToken: tok, PublicKey: a.key.Public().(ed25519.PublicKey), Facts: hostFacts(a.cfg.Version)}
	backoff := time.Second
	for {
		resp, err := call(ctx, a.api, 15*time.Second, func(ctx context.Context, c *client.ClientWithResponses) (*client.AgentEnrollResponse, error) {
			return c.AgentEnrollWithResponse(ctx, req)
		})
		if err == nil && resp.StatusCode() == http.StatusCreated && resp.JSON201 != nil {
			return a.finishEnroll(resp.JSON201, et)
		}
		if errors.Is(err, pki.ErrPinMismatch) {
			a.log.Error("refusing to enroll: the server is not the control plane the enrollment token pins; nothing stored",
				keyEvent, eventEnrollRefused, keyErr, err)
			return nil, fmt.Errorf("refusing to enroll: %w", err)
		}
		if err == nil {
			err = unexpected(resp)
			if !retryable(err) || resp.StatusCode() == http.StatusUnauthorized {
				a.log.Error("enrollment refused", keyEvent, eventEnrollRefused, keyErr, err)
				return nil, fmt.Errorf("enrollment refused: %w", err)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Warn("cannot enroll yet; retrying", keyErr, err, "retry_in_ms", backoff.Milliseconds())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (a *Agent) finishEnroll(e *client.Enrollment, tok enrollToken) (*identity, error) {
	now := time.Now()
	keys, err := checkEnrollment(e, tok.KeyFP, now)
	if err != nil {
		a.log.Error("refusing to enroll with this server: nothing stored", keyEvent, eventEnrollRefused, keyErr, err)
		return nil, fmt.Errorf("refusing to enroll: %w", err)
	}
	if err := a.keys.set(keys); err != nil {
		return nil, err
	}
	if tok.CAFP != "" && a.cfg.httpDoer == nil {
		if err := a.tls.saveCA(a.cfg.DataDir); err != nil {
			return nil, err
		}
	}
	id := &identity{NodeID: e.NodeId.String(), ClusterID: e.ClusterId.String(), NodeName: e.NodeName,
		Credential: e.Credential, EnrolledAt: now.UTC(), CAFingerprint: tok.CAFP}
	// The identity is written last: its presence means "enrolled".
	if err := saveJSON(filepath.Join(a.cfg.DataDir, fileIdentity), id); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.KeyID)
	}
	a.log.Info("enrolled", keyEvent, eventEnrolled, keyNodeID, id.NodeID, keyClusterID, id.ClusterID,
		"node_name", id.NodeName, "signing_keys", ids)
	return id, nil
}
