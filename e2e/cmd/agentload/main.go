//go:build linux

// Command agentload measures how many node agents one backstopd serves:
// it runs many simulated agents in one process, each speaking the real
// agent protocol through the generated client (openapi/client), exactly
// as backstop-agent does:
//
//   - enrollment with a fresh Ed25519 key and the node's one-time
//     enrollment token, the answer's signing keys checked against the
//     fingerprint the token embeds (nodeagent's checkEnrollment);
//   - the configuration fetched after the first acknowledged heartbeat
//     and whenever a heartbeat answer announces another version;
//   - heartbeats every heartbeat_ms of the cluster's timing, measured from
//     one send to the next, each try bounded by the lease TTL, with a
//     report like a real agent's: every known hierarchy's state, the
//     health of the resources of those in service (quick and deep check
//     results with their times), and every communication path with its
//     state, loss and round-trip time;
//   - a command long poll kept open (wait 25 s), every envelope verified
//     (openapi/envelope's Verifier: trusted key, signature, addressee,
//     expiry, replay, epoch and term) and answered with a result.
//
// It prints, for each number of agents of the curve: heartbeats per
// second acknowledged against expected, heartbeat latency p50/p99/max,
// errors (and 503 answers, load shed by the server), lease lapses seen by
// the agents (a heartbeat acknowledged after the agent's own lease ran
// out), node.down and node.unreachable events (every agent is healthy,
// so any is a false detection), placement latency while under load
// (request → command in the agent's hands → operation succeeded), and
// the CPU and memory of backstopd, PostgreSQL and agentload itself, from
// /proc.
//
// With --crashes N (default 3) N agents that hold a hierarchy in
// service crash while each point is measured (they stop at once and
// never answer again; their connections stay open and silent; their
// peers report the paths to them dead), and each crash is followed to
// the hierarchy in service on its other node: node.down, command issued,
// delivered, answered, each from the fault. Take-overs delivered before
// the crashed agent's lease could have run out are counted (must be 0);
// crashed nodes are left out of the false detections and, from their
// crash on, of the heartbeats expected (crash.go).
//
// With --api-rate N it also sends N operator GETs a second while each
// point is measured, at a fixed rate (open loop: latency from each
// request's scheduled time, so a stalled server is not hidden by a
// client waiting for it), and prints their p50/p99/max and errors.
//
// Unless --url is given it starts everything itself: a throwaway
// PostgreSQL (store/pgtemp) and backstopd built from this module as a
// child process. The curve is incremental: agents are added to the
// running ones, so --agents 250,1000,2000 measures 250, then adds 750,
// then 1,000 more. Each point runs --warmup, then measures --duration.
//
//	go run ./e2e/cmd/agentload --agents 250,1000,2000
//	make bench-scale
//
// Clusters have --cluster-size nodes (the last one fewer), every node a
// communication path to the next and previous node of its cluster, and
// --hierarchies hierarchies per cluster (a check-only tcp resource),
// each with priorities on two nodes. The addresses are in 198.18.0.0/15
// and nothing is ever sent to them: the agents are simulated.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop/e2e/internal/nslab"
	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/pki"
	"github.com/backstop-ha/backstop/store/pgtemp"
)

const (
	adminToken = "agentload-bootstrap-admin-secret-0123456789"
	sealKey    = "agentload-seal-secret-dGhpcyBpcyBvbmx5IGEgdGVzdA=="
	pollWait   = 25 * time.Second
)

type options struct {
	backstopd   string
	url         string
	token       string
	profile     string
	agents      []int
	clusterSize int
	hierarchies int
	warmup      time.Duration
	duration    time.Duration
	placeEvery  time.Duration
	enrollPar   int
	pprof       string
	logLevel    string
	keep        bool
	pgStats     bool
	ca          string
	runEnrolled bool
	apiRate     int
	tls         bool
	dbParams    string
	crashes     int
	cpuProfile  string
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	var agents string
	flag.StringVar(&o.backstopd, "backstopd", os.Getenv("BACKSTOP_E2E_BACKSTOPD"), "backstopd binary (default: built from ./cmd/backstopd)")
	flag.StringVar(&o.url, "url", "", "use this running backstopd instead of starting PostgreSQL and backstopd (then no server CPU is measured)")
	flag.StringVar(&o.token, "token", adminToken, "admin token for --url")
	flag.StringVar(&o.profile, "profile", "lan", "timing profile of the clusters")
	flag.StringVar(&agents, "agents", "250,1000,2000", "the curve: numbers of agents, increasing, comma-separated")
	flag.IntVar(&o.clusterSize, "cluster-size", 64, "nodes per cluster")
	flag.IntVar(&o.hierarchies, "hierarchies", 4, "hierarchies per cluster")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "time after the agents of a point are running, before measuring")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measurement time per point")
	flag.DurationVar(&o.placeEvery, "place-every", time.Second, "placement requests (switchovers) while measuring: one per this interval (0: none)")
	flag.IntVar(&o.enrollPar, "enroll-parallel", 8, "enrollments at once")
	flag.StringVar(&o.pprof, "pprof", "", "pass --pprof-listen to backstopd (e.g. 127.0.0.1:6060)")
	flag.StringVar(&o.logLevel, "log-level", "info", "backstopd's --log-level")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory (backstopd log)")
	flag.StringVar(&o.ca, "ca", "", "with --url on HTTPS: PEM file of the CA to trust (backstopd's --tls-ca)")
	flag.IntVar(&o.apiRate, "api-rate", 0, "while measuring, GET requests per second an operator token sends at a fixed rate (open loop: cluster list, a cluster, its nodes, its hierarchies, its latest events), latency from each request's scheduled time; 0: none")
	flag.StringVar(&o.dbParams, "db-params", "", "extra parameters of backstopd's --database-url, e.g. pool_max_conns=32")
	flag.BoolVar(&o.tls, "tls", false, "serve the backstopd agentload starts over HTTPS (a throwaway CA; agents trust it and show client certificates of their keys, as backstop-agent does) instead of plain HTTP on loopback")
	flag.BoolVar(&o.runEnrolled, "run-enrolled", false, "start each agent as soon as it has enrolled, as machines enrolled one after another do (default: start a point's agents once all are enrolled)")
	flag.IntVar(&o.crashes, "crashes", 3, "node crashes per point: while measuring, this many agents holding a hierarchy in service die as crashed machines do (spread over the window), and each is followed to its hierarchy in service on the other node (0: none)")
	flag.BoolVar(&o.pgStats, "pg-stats", false, "load pg_stat_statements and print the statements that took most time at each point")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write agentload's own CPU profile to this file (where the load tool's share of the cores goes)")
	flag.Parse()
	if o.crashes < 0 {
		fmt.Fprintln(os.Stderr, "agentload: --crashes must be 0 or more")
		return 2
	}
	for f := range strings.SplitSeq(agents, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || (len(o.agents) > 0 && n <= o.agents[len(o.agents)-1]) {
			fmt.Fprintf(os.Stderr, "agentload: --agents must be increasing positive numbers (%q)\n", agents)
			return 2
		}
		o.agents = append(o.agents, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		// The tool's own garbage collection stalled its goroutines
		// (mark assists of ~50 ms CPU per cycle, a cycle every 1.5 s
		// at 1,000 agents) and those stalls showed up as heartbeat
		// latency: 57% of the 100-ms windows with a heartbeat slower
		// than 50 ms overlapped one of agentload's GC cycles, which
		// covered 25% of the time (backstopd's: 43% vs 31%, no
		// correlation); with a fifth as many cycles, still 6 of 15
		// such windows in 5% of the time. So: collect only when the
		// heap reaches 3 GiB (about once a minute at 1,000 agents; the
		// live heap is ~50 MB, so a cycle costs what it did). This
		// machine has memory to spare; set GOGC or GOMEMLIMIT to
		// override.
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(3 << 30)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "agentload:", err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "agentload:", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if err := bench(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "agentload:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return 0
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" "+format+"\n", a...)
}

// env is what the simulated agents run against.
type env struct {
	o         options
	api       *nslab.Client
	base      string
	serverPID int // 0: not ours
	pgPID     int
	pgURL     string
	m         *metrics
	timing    client.Timing
	roots     *x509.CertPool // nil: the system's
	apiLoad   *apiLoad       // --api-rate
	tlsFiles  pki.Files      // --tls: the CA and server certificate of the backstopd started
	byNode    map[string]*agent
	crashes   *crashPlan
	deadPaths sync.Map // crashed node id → time.Time its peers see their paths to it dead
}

func bench(ctx context.Context, o options) (err error) {
	e := &env{o: o, m: newMetrics(), byNode: map[string]*agent{}, crashes: newCrashPlan()}
	dir, err := os.MkdirTemp("", "agentload-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
			logf("kept %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	if o.url == "" {
		bin := o.backstopd
		if bin == "" {
			bin = filepath.Join(dir, "backstopd")
			logf("building ./cmd/backstopd")
			if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/backstopd").CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/backstopd: %w\n%s", err, out)
			}
		}
		logf("starting PostgreSQL (pgtemp)")
		pg, err := pgtemp.Start(ctx, pgtemp.Options{})
		if err != nil {
			return err
		}
		defer pg.Stop()
		e.pgPID = pg.PID()
		e.pgURL = pg.URL("agentload")
		if err := setupDatabase(ctx, pg, o.pgStats); err != nil {
			return err
		}
		if o.pgStats {
			// pg_stat_statements must be preloaded: restart the server.
			logf("PostgreSQL restarted with pg_stat_statements")
			e.pgPID, err = restartWithStats(ctx, pg)
			// pgtemp's Stop knows the first postmaster only: stop the
			// restarted one first (its watchdog still covers a crash).
			defer pgCtl(context.Background(), pg, "stop")
			if err != nil {
				return err
			}
		}
		if o.tls {
			ca, err := pki.NewCA("agentload", 24*time.Hour)
			if err != nil {
				return err
			}
			if e.tlsFiles, err = ca.WriteFiles(filepath.Join(dir, "tls"), []string{"127.0.0.1"}, 24*time.Hour); err != nil {
				return err
			}
			o.ca = e.tlsFiles.CA
		}
		dbURL := e.pgURL
		if o.dbParams != "" {
			dbURL += "&" + o.dbParams
		}
		d, err := startBackstopd(ctx, bin, dbURL, filepath.Join(dir, "backstopd.log"), o, e.tlsFiles)
		if err != nil {
			return err
		}
		defer d.stop()
		e.base, e.serverPID = d.url, d.cmd.Process.Pid
	} else {
		e.base = strings.TrimRight(o.url, "/")
	}
	if o.ca != "" {
		if e.roots, err = pki.CertPool(o.ca); err != nil {
			return err
		}
	}
	e.api = nslab.NewClient(e.base, o.token)
	e.api.HTTP = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var all []*agent
	defer func() {
		cancel()
		wg.Wait()
		for _, a := range all {
			a.wire.release()
		}
	}()
	var clusters []*loadCluster
	var rows []pointResult
	for _, n := range o.agents {
		logf("point %d agents: adding %d", n, n-len(all))
		added, cs, err := e.addAgents(ctx, runCtx, &wg, len(all), n, clusters)
		if err != nil {
			return err
		}
		clusters = cs
		all = append(all, added...)
		logf("point %d agents: %d running; warming up %v", n, len(all), o.warmup)
		if err := testkit.Sleep(ctx, o.warmup); err != nil {
			return err
		}
		r, err := e.measure(ctx, all, clusters)
		if err != nil {
			return err
		}
		rows = append(rows, r)
		printRows(os.Stdout, o, rows[len(rows)-1:], false)
		if o.pgStats && e.pgURL != "" {
			printPGStats(ctx, e.pgURL)
		}
	}
	fmt.Println()
	printRows(os.Stdout, o, rows, true)
	if o.crashes > 0 {
		fmt.Println()
		printCrashTable(os.Stdout, o, rows)
	}
	return nil
}

// setupDatabase creates the database.
func setupDatabase(ctx context.Context, pg *pgtemp.Server, stats bool) error {
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE agentload"); err != nil {
		return err
	}
	if stats {
		if _, err := conn.Exec(ctx, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"); err != nil {
			return err
		}
	}
	return nil
}

// restartWithStats restarts the pgtemp server (pg_ctl restart, as its
// own user) so that pg_stat_statements is loaded, and creates the
// extension. It returns the new postmaster's PID.
func restartWithStats(ctx context.Context, pg *pgtemp.Server) (int, error) {
	if err := pgCtl(ctx, pg, "restart"); err != nil {
		return 0, err
	}
	data := filepath.Join(pg.Dir(), "data")
	conn, err := pgx.Connect(ctx, pg.URL("agentload"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE EXTENSION pg_stat_statements"); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid, err
}

// pgCtl runs pg_ctl action on the pgtemp server, as its user.
func pgCtl(ctx context.Context, pg *pgtemp.Server, action string) error {
	var ctl string
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(m) > 0 {
		slices.Sort(m)
		ctl = m[len(m)-1]
	}
	if ctl == "" {
		return errors.New("pg_ctl not found")
	}
	args := []string{"-D", filepath.Join(pg.Dir(), "data"), "-w", "-m", "fast", "-l", filepath.Join(pg.Dir(), "server.log"), action}
	cmd := exec.CommandContext(ctx, ctl, args...)
	if os.Geteuid() == 0 {
		cmd = exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=postgres", "--regid=postgres", "--init-groups", ctl}, args...)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl %s: %w\n%s", action, err, out)
	}
	return nil
}

func printPGStats(ctx context.Context, url string) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		logf("pg_stat_statements: %v", err)
		return
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3), rows,
		left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`)
	if err != nil {
		logf("pg_stat_statements: %v", err)
		return
	}
	defer rows.Close()
	fmt.Println("  pg_stat_statements since the previous point (calls, total ms, mean ms, rows, query):")
	for rows.Next() {
		var calls, r int64
		var total, mean float64
		var q string
		if err := rows.Scan(&calls, &total, &mean, &r, &q); err != nil {
			break
		}
		fmt.Printf("  %9d %9.0f %8.3f %9d  %s\n", calls, total, mean, r, q)
	}
	rows.Close()
	_, _ = conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
}

// daemon is backstopd run by agentload.
type daemon struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

func startBackstopd(ctx context.Context, bin, dbURL, logPath string, o options, tlsFiles pki.Files) (*daemon, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	// Plain HTTP on loopback (BACKSTOP_INSECURE_HTTP below) unless --tls:
	// then HTTPS with the throwaway CA's certificate, pinned by the
	// enrollment tokens as in production.
	args := []string{"--listen", addr, "--database-url", dbURL, "--log-level", o.logLevel}
	if o.pprof != "" {
		args = append(args, "--pprof-listen", o.pprof)
	}
	scheme := "http"
	if tlsFiles.Cert != "" {
		scheme = "https"
		args = append(args, "--tls-cert", tlsFiles.Cert, "--tls-key", tlsFiles.Key, "--tls-ca", tlsFiles.CA)
	}
	cmd := exec.Command(bin, args...)
	var envv []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BACKSTOP_") {
			envv = append(envv, kv)
		}
	}
	// Plain HTTP on loopback (set through the environment, which a
	// backstopd older than the TLS flags ignores, so an old binary can
	// be measured side by side).
	cmd.Env = append(envv, "BACKSTOP_SECRET_KEY="+sealKey, "BACKSTOP_BOOTSTRAP_TOKEN="+adminToken)
	if scheme == "http" {
		cmd.Env = append(cmd.Env, "BACKSTOP_INSECURE_HTTP=true")
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemon{cmd: cmd, url: scheme + "://" + addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()
	c := &http.Client{Timeout: 2 * time.Second}
	if tlsFiles.CA != "" {
		conf, err := pki.ClientConfig(tlsFiles.CA)
		if err != nil {
			d.stop()
			return nil, err
		}
		c.Transport = &http.Transport{TLSClientConfig: conf}
	}
	for end := time.Now().Add(time.Minute); time.Now().Before(end); {
		select {
		case <-d.done:
			return nil, fmt.Errorf("backstopd exited (log %s)", logPath)
		default:
		}
		if resp, err := c.Get(d.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		if err := testkit.Sleep(ctx, 50*time.Millisecond); err != nil {
			d.stop()
			return nil, err
		}
	}
	d.stop()
	return nil, fmt.Errorf("backstopd not ready after a minute (log %s)", logPath)
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// loadCluster is one cluster of simulated nodes.
type loadCluster struct {
	id          string
	nodes       []string // node ids, in order
	hierarchies []*loadHierarchy
}

type loadHierarchy struct {
	id      string
	cluster *loadCluster
	nodes   [2]string // its priority 1 and 2
	on      int       // index into nodes it is placed on (-1: nowhere)
	crashed bool      // a node of it crashed (--crashes): it moves no more
}

// addAgents creates the nodes for agents from..to-1 (new clusters as
// needed: the last cluster of a previous point is never filled up, so
// each point's clusters are whole) and starts their agents.
func (e *env) addAgents(ctx, runCtx context.Context, wg *sync.WaitGroup, from, to int, clusters []*loadCluster) ([]*agent, []*loadCluster, error) {
	type pending struct {
		c     *loadCluster
		i     int
		token string
	}
	var todo []pending
	for left := to - from; left > 0; {
		size := min(left, e.o.clusterSize)
		left -= size
		c := &loadCluster{}
		var cl struct {
			ID     string        `json:"id"`
			Timing client.Timing `json:"timing"`
		}
		if _, err := e.api.Do(ctx, "POST", "/v1/clusters", map[string]any{"name": fmt.Sprintf("load-%d", len(clusters)+1), "timing_profile": e.o.profile}, 201, &cl); err != nil {
			return nil, nil, err
		}
		c.id, e.timing = cl.ID, cl.Timing
		clusters = append(clusters, c)
		for i := range size {
			var nd struct {
				ID    string `json:"id"`
				Token string `json:"enrollment_token"`
			}
			if _, err := e.api.Do(ctx, "POST", "/v1/clusters/"+c.id+"/nodes", map[string]any{"name": fmt.Sprintf("n%03d", i+1)}, 201, &nd); err != nil {
				return nil, nil, err
			}
			c.nodes = append(c.nodes, nd.ID)
			todo = append(todo, pending{c, i, nd.Token})
		}
		// A ring of paths: node i to node i+1 (both directions).
		ci := len(clusters)
		for i := range size {
			j := (i + 1) % size
			if size < 2 || (size == 2 && i == 1) {
				break
			}
			if _, err := e.api.Do(ctx, "POST", "/v1/clusters/"+c.id+"/paths", map[string]any{
				"a": map[string]any{"node_id": c.nodes[i], "address": addr(ci, i)},
				"b": map[string]any{"node_id": c.nodes[j], "address": addr(ci, j)},
			}, 201, nil); err != nil {
				return nil, nil, err
			}
		}
		for k := range min(e.o.hierarchies, size/2) {
			h := &loadHierarchy{cluster: c, nodes: [2]string{c.nodes[2*k], c.nodes[2*k+1]}, on: -1}
			var out struct {
				ID string `json:"id"`
			}
			spec := map[string]any{
				"name":       fmt.Sprintf("h%d", k+1),
				"resources":  []map[string]any{{"name": "probe", "kind": "tcp", "params": map[string]any{"host": "198.18.0.1", "port": 7000}}},
				"priorities": []map[string]any{{"node_id": h.nodes[0], "priority": 1}, {"node_id": h.nodes[1], "priority": 2}},
			}
			if _, err := e.api.Do(ctx, "POST", "/v1/clusters/"+c.id+"/hierarchies", spec, 201, &out); err != nil {
				return nil, nil, err
			}
			h.id = out.ID
			c.hierarchies = append(c.hierarchies, h)
		}
	}
	// Enroll in random order: an enrollment locks its cluster's row
	// (configuration version, event sequence), so parallel enrollments
	// into one cluster only queue.
	mrand.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })
	logf("created %d nodes; enrolling them", len(todo))
	agents := make([]*agent, len(todo))
	sem := make(chan struct{}, e.o.enrollPar)
	var ewg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for k, p := range todo {
		sem <- struct{}{}
		ewg.Go(func() {
			defer func() { <-sem }()
			a := newAgent(e, p.c.id, p.c.nodes[p.i])
			if err := a.enroll(ctx, p.token); err != nil {
				errMu.Lock()
				firstErr = cmpErr(firstErr, fmt.Errorf("enroll %s: %w", p.c.nodes[p.i], err))
				errMu.Unlock()
				return
			}
			agents[k] = a
			if e.o.runEnrolled {
				a.start(runCtx, wg)
			}
		})
	}
	ewg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	// Start them once all are enrolled, unless --run-enrolled started
	// each already. Enrollment used to bump its cluster's configuration
	// version, which every running agent of the cluster then fetched
	// again (quadratic in the cluster's size: 1,609 fetches for 256
	// agents with --run-enrolled); it no longer does, and either way
	// each agent fetches its configuration about once.
	for _, a := range agents {
		e.byNode[a.nodeID] = a
		if !e.o.runEnrolled {
			a.start(runCtx, wg)
		}
	}
	// Bring the hierarchies of the new clusters in service on their
	// first node, so that agents report resources and switchovers can
	// be measured.
	var pwg sync.WaitGroup
	for _, c := range clusters {
		for _, h := range c.hierarchies {
			if h.on >= 0 {
				continue
			}
			sem <- struct{}{}
			pwg.Go(func() {
				defer func() { <-sem }()
				if err := e.place(ctx, h, 0, nil); err != nil {
					errMu.Lock()
					firstErr = cmpErr(firstErr, err)
					errMu.Unlock()
				}
			})
		}
	}
	pwg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	return agents, clusters, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func addr(cluster, node int) string {
	return fmt.Sprintf("198.18.%d.%d", (cluster*64+node)/250%256, (cluster*64+node)%250+1)
}

// place brings h in service on its node i (in-service, or a switchover
// when it is in service elsewhere) and waits until the operation
// succeeded. When lat is not nil it records the latencies.
func (e *env) place(ctx context.Context, h *loadHierarchy, i int, lat *placeLatency) error {
	path := "/v1/clusters/" + h.cluster.id + "/hierarchies/" + h.id
	var op struct {
		ID        string `json:"id"`
		CommandID string `json:"command_id"`
		State     string `json:"state"`
		Detail    string `json:"detail"`
	}
	start := time.Now()
	var err error
	if h.on < 0 {
		_, err = e.api.Do(ctx, "POST", path+"/in-service", map[string]any{"node_id": h.nodes[i]}, 202, &op)
	} else {
		_, err = e.api.Do(ctx, "POST", path+"/switchover", map[string]any{"node_id": h.nodes[i]}, 202, &op)
	}
	if err != nil {
		return err
	}
	for {
		if op.State == "succeeded" {
			break
		}
		if op.State == "failed" {
			return fmt.Errorf("placement of %s failed: %s", h.id, op.Detail)
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("placement of %s not done after a minute (state %s)", h.id, op.State)
		}
		if err := testkit.Sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
		if _, err := e.api.Do(ctx, "GET", "/v1/operations/"+op.ID, nil, 200, &op); err != nil {
			return err
		}
	}
	done := time.Since(start)
	h.on = i
	if lat != nil {
		lat.done = append(lat.done, done)
		// A switchover runs two commands (take out, bring in); the
		// delivery of the operation's command is what is recorded.
		if v, ok := e.m.delivered.Load(op.CommandID); ok {
			lat.delivered = append(lat.delivered, v.(time.Time).Sub(start))
		}
	}
	return nil
}

type placeLatency struct {
	delivered, done []time.Duration
}

// metrics are shared by every agent.
type metrics struct {
	mu        sync.Mutex
	latencies []time.Duration // acknowledged heartbeats' round trips
	acked     atomic.Int64
	errs      atomic.Int64
	shed      atomic.Int64 // 503 answers
	timeouts  atomic.Int64
	lapses    atomic.Int64
	declared  atomic.Int64 // answers saying the node was declared down
	rejected  atomic.Int64 // commands refused by verification
	configs   atomic.Int64 // configuration fetches
	lastErr   atomic.Pointer[string]
	delivered sync.Map // command id → time.Time it reached an agent
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) observe(d time.Duration) {
	m.mu.Lock()
	m.latencies = append(m.latencies, d)
	m.mu.Unlock()
}

func (m *metrics) fail(err error) {
	m.errs.Add(1)
	s := err.Error()
	m.lastErr.Store(&s)
}

// agent is one simulated node agent.
type agent struct {
	e         *env
	clusterID string
	nodeID    string
	cred      string
	c         *client.ClientWithResponses
	keys      map[string]ed25519.PublicKey
	key       ed25519.PrivateKey
	instance  string
	wire      *wire              // its connections, cut by a crash
	stop      context.CancelFunc // ends its loops (set by start)

	// mu guards the fields below.
	mu        sync.Mutex
	conf      *client.AgentConfig
	inService map[string]int64 // hierarchy id → epoch, for those in service here
	epochs    map[string]int64 // newest epoch applied, per hierarchy
	term      int64
	seen      map[string]bool
	leaseEnd  time.Time
	quickAt   time.Time
	deepAt    time.Time
	kick      chan struct{}
	lastSent  time.Time // the newest heartbeat's send time
	crashedAt time.Time // zero while it runs
}

func newAgent(e *env, clusterID, nodeID string) *agent {
	a := &agent{e: e, clusterID: clusterID, nodeID: nodeID, inService: map[string]int64{}, epochs: map[string]int64{},
		seen: map[string]bool{}, kick: make(chan struct{}, 1), instance: fmt.Sprintf("%016x", mrand.Uint64()),
		wire: newWire(net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}), stop: func() {}}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	a.key = key
	// Over HTTPS the agent shows a client certificate of its key, as
	// backstop-agent does (enrollment binds the key to it).
	tlsConf := &tls.Config{RootCAs: e.roots}
	if cert, err := pki.ClientCertificate(key, "agentload"); err == nil {
		tlsConf.Certificates = []tls.Certificate{*cert}
	}
	// One transport per agent, set up as backstop-agent's: each agent
	// has its own connections, as separate machines would.
	doer := &http.Client{Transport: &http.Transport{
		DialContext:         a.wire.dial,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig:     tlsConf,
	}}
	c, err := client.NewClientWithResponses(e.base, client.WithHTTPClient(doer),
		client.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("User-Agent", "backstop-agent/agentload")
			if a.cred != "" {
				req.Header.Set("Authorization", "Bearer "+a.cred)
			}
			return nil
		}))
	if err != nil {
		panic(err) // only a malformed base URL
	}
	a.c = c
	return a
}

// enroll enrolls as backstop-agent does and checks the answer's keys
// against the token's fingerprint.
func (a *agent) enroll(ctx context.Context, token string) error {
	// bse_<secret>.<key fingerprint>[.<CA fingerprint>] (the CA part when
	// backstopd serves HTTPS; the client already trusts --ca).
	parts := strings.Split(strings.TrimPrefix(token, "bse_"), ".")
	if !strings.HasPrefix(token, "bse_") || len(parts) < 2 || len(parts) > 3 {
		return fmt.Errorf("malformed enrollment token")
	}
	fingerprint := parts[1]
	pub := a.key.Public().(ed25519.PublicKey)
	kernel := "6.1.0-agentload"
	resp, err := a.c.AgentEnrollWithResponse(ctx, client.EnrollRequest{
		EnrollmentToken: token, PublicKey: pub,
		Facts: client.HostFacts{Hostname: "load-" + a.nodeID[:8], Os: "linux", Arch: "amd64", Kernel: &kernel, AgentVersion: "agentload"},
	})
	if err != nil {
		return err
	}
	if resp.JSON201 == nil {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode(), resp.Body)
	}
	en := resp.JSON201
	a.keys = map[string]ed25519.PublicKey{}
	matched := false
	for _, k := range en.SigningKeys {
		if len(k.PublicKey) != ed25519.PublicKeySize {
			return fmt.Errorf("invalid signing key %q", k.KeyId)
		}
		a.keys[k.KeyId] = ed25519.PublicKey(k.PublicKey)
		matched = matched || envelope.Fingerprint(k.PublicKey) == fingerprint
	}
	if !matched {
		return errors.New("no signing key matches the token's fingerprint")
	}
	if en.NodeId.String() != a.nodeID || en.Credential == "" {
		return fmt.Errorf("enrolled as node %s, want %s", en.NodeId, a.nodeID)
	}
	a.cred = en.Credential
	return nil
}

// start runs the agent until ctx ends or it crashes.
func (a *agent) start(ctx context.Context, wg *sync.WaitGroup) {
	ctx, a.stop = context.WithCancel(ctx)
	wg.Go(func() { a.run(ctx) })
}

func (a *agent) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { a.heartbeatLoop(ctx) })
	wg.Go(func() { a.pollLoop(ctx) })
	wg.Go(func() { a.configLoop(ctx) })
	wg.Wait()
}

func ms(v int) time.Duration { return time.Duration(v) * time.Millisecond }

func (a *agent) heartbeatLoop(ctx context.Context) {
	// Spread the agents' phases, as machines started at different times.
	t := time.NewTimer(time.Duration(mrand.Int64N(int64(ms(a.e.timing.HeartbeatMs)))))
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		a.mu.Lock()
		lapsed := !first && sent.After(a.leaseEnd)
		a.lastSent = sent
		a.mu.Unlock()
		if lapsed {
			a.e.m.lapses.Add(1)
		}
		a.heartbeat(ctx, sent, first)
		first = false
		t.Reset(max(time.Until(sent.Add(ms(a.e.timing.HeartbeatMs))), 0))
	}
}

// heartbeat sends one heartbeat, bounded by the lease TTL as the agent's.
func (a *agent) heartbeat(ctx context.Context, sent time.Time, first bool) {
	hb := a.report(sent)
	perTry := min(max(ms(a.e.timing.LeaseTtlMs), 200*time.Millisecond), 10*time.Second)
	tctx, cancel := context.WithTimeout(ctx, perTry)
	defer cancel()
	resp, err := a.c.AgentHeartbeatWithResponse(tctx, hb)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			a.e.m.timeouts.Add(1)
		}
		a.e.m.fail(err)
		return
	}
	if resp.StatusCode() == http.StatusServiceUnavailable {
		a.e.m.shed.Add(1)
		return
	}
	if resp.JSON200 == nil {
		a.e.m.fail(fmt.Errorf("heartbeat: HTTP %d: %.200s", resp.StatusCode(), resp.Body))
		return
	}
	a.e.m.observe(time.Since(sent))
	a.e.m.acked.Add(1)
	ack := resp.JSON200
	if ack.LeaseTtlMs == 0 {
		a.e.m.declared.Add(1)
	}
	a.mu.Lock()
	a.leaseEnd = sent.Add(ms(ack.LeaseTtlMs))
	a.term = max(a.term, ack.Term)
	refresh := first || a.conf == nil || a.conf.Version != ack.ConfigVersion
	a.mu.Unlock()
	if refresh {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// report builds the heartbeat body as nodeagent's buildHeartbeat does.
func (a *agent) report(now time.Time) client.Heartbeat {
	a.mu.Lock()
	defer a.mu.Unlock()
	var version int64
	hiers := []client.HierarchyReport{}
	res := []client.ResourceHealth{}
	paths := []client.PathReport{}
	qi, di := ms(a.e.timing.QuickCheckIntervalMs), ms(a.e.timing.DeepCheckIntervalMs)
	if now.Sub(a.quickAt) >= qi {
		a.quickAt = now
	}
	if now.Sub(a.deepAt) >= di {
		a.deepAt = now
	}
	if a.conf != nil {
		version = a.conf.Version
		for _, h := range a.conf.Hierarchies {
			st := client.PlacementStateOutOfService
			if _, ok := a.inService[h.Id.String()]; ok {
				st = client.PlacementStateInService
			}
			hiers = append(hiers, client.HierarchyReport{HierarchyId: h.Id, Epoch: a.epochs[h.Id.String()], State: st})
			if st != client.PlacementStateInService {
				continue
			}
			for _, r := range h.Resources {
				zero, restarts := int64(0), 0
				res = append(res, client.ResourceHealth{HierarchyId: h.Id, Resource: r.Name, CheckFailures: &zero, Restarts: &restarts,
					Quick: &client.CheckResult{Ok: true, At: a.quickAt.UTC()}, Deep: &client.CheckResult{Ok: true, At: a.deepAt.UTC()}})
			}
		}
		for _, p := range a.conf.Paths {
			if p.LocalNodeId.String() != a.nodeID {
				continue
			}
			loss := float32(0)
			rtt := float32(0.2 + 0.2*mrand.Float64())
			pr := client.PathReport{PathId: p.Id, PeerNodeId: p.RemoteNodeId, State: client.PathReportStateUp, Loss: &loss, RttMs: &rtt}
			if dead, ok := a.e.deadPaths.Load(p.RemoteNodeId.String()); ok && !now.Before(dead.(time.Time)) {
				// The peer crashed (--crashes): its path heartbeats stopped.
				loss = 1
				pr.State, pr.RttMs = client.PathReportStateDown, nil
			}
			paths = append(paths, pr)
		}
	}
	return client.Heartbeat{ConfigVersion: version, Instance: &a.instance, Hierarchies: &hiers, Resources: &res, Paths: &paths}
}

func (a *agent) configLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := a.c.AgentConfigWithResponse(tctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil || resp.JSON200 == nil {
			if err == nil {
				err = fmt.Errorf("config: HTTP %d", resp.StatusCode())
			}
			a.e.m.fail(err)
			continue
		}
		a.e.m.configs.Add(1)
		a.mu.Lock()
		a.conf = resp.JSON200
		for _, k := range resp.JSON200.SigningKeys {
			if _, ok := a.keys[k.KeyId]; !ok && k.EndorsedBy != nil {
				a.keys[k.KeyId] = ed25519.PublicKey(k.PublicKey) // endorsement checked by the real agent; rotation is not exercised here
			}
		}
		a.mu.Unlock()
	}
}

// Seen and Newest make agent the verifier's memory.
func (a *agent) Seen(id string) bool { return a.seen[id] }
func (a *agent) Newest(h string) (int64, int64) {
	return a.epochs[h], a.term
}

func (a *agent) pollLoop(ctx context.Context) {
	wait := int(pollWait / time.Millisecond)
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		tctx, cancel := context.WithTimeout(ctx, pollWait+15*time.Second)
		resp, err := a.c.AgentPollCommandsWithResponse(tctx, &client.AgentPollCommandsParams{Wait: &wait})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && resp.JSON200 == nil {
			err = fmt.Errorf("poll: HTTP %d: %.200s", resp.StatusCode(), resp.Body)
		}
		if err != nil {
			a.e.m.fail(err)
			backoff = min(max(2*backoff, 250*time.Millisecond), 5*time.Second)
			if testkit.Sleep(ctx, backoff) != nil {
				return
			}
			continue
		}
		backoff = 0
		now := time.Now()
		for _, env := range resp.JSON200.Commands {
			a.e.m.delivered.LoadOrStore(env.CommandId.String(), now)
			if cmd, answered, ok := a.handle(ctx, env); ok && cmd.Action == envelope.BringInService {
				a.e.crashes.tookOver(a.nodeID, cmd, now, answered)
			}
		}
	}
}

// handle verifies an envelope and answers it: a verified command
// "runs" (its steps take no time here) and succeeds; a refused one is
// reported rejected with its reason, as the agent does. It returns the
// verified command (ok false: refused) and when its success answer was
// acknowledged (zero: it was not).
func (a *agent) handle(ctx context.Context, e client.Envelope) (cmd envelope.Command, answered time.Time, ok bool) {
	a.mu.Lock()
	v := envelope.Verifier{ClusterID: a.clusterID, NodeID: a.nodeID, Keys: a.keys, Memory: a}
	c, err := v.Verify(envelope.Envelope{Payload: e.Payload, KeyID: e.KeyId, Signature: e.Signature})
	if err == nil && c.ID != e.CommandId.String() {
		err = &envelope.Rejection{Reason: envelope.ReasonMalformed, Detail: "command id mismatch"}
	}
	var res client.CommandResult
	if err != nil {
		a.mu.Unlock()
		a.e.m.rejected.Add(1)
		a.e.m.fail(fmt.Errorf("command %s rejected: %w", e.CommandId, err))
		reason := string(envelope.ReasonOf(err))
		if reason == "" {
			reason = string(envelope.ReasonMalformed)
		}
		d := err.Error()
		res = client.CommandResult{Status: client.CommandResultStatusRejected, Reason: &reason, Detail: &d}
	} else {
		cmd, ok = *c, true
		a.seen[cmd.ID] = true
		a.epochs[cmd.HierarchyID] = max(a.epochs[cmd.HierarchyID], cmd.Epoch)
		a.term = max(a.term, cmd.Term)
		var steps []client.StepResult
		action := client.StepResultActionStart
		switch cmd.Action {
		case envelope.BringInService:
			a.inService[cmd.HierarchyID] = cmd.Epoch
		case envelope.TakeOutOfService:
			delete(a.inService, cmd.HierarchyID)
			action = client.StepResultActionStop
		}
		a.mu.Unlock()
		for _, r := range cmd.Resources {
			d := int64(0)
			steps = append(steps, client.StepResult{Resource: r.Name, Action: action, Ok: true, DurationMs: &d})
		}
		res = client.CommandResult{Status: client.CommandResultStatusSucceeded, Steps: &steps}
	}
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := a.c.AgentCommandResultWithResponse(tctx, e.CommandId, res)
		cancel()
		if err == nil && resp.StatusCode() < 300 {
			if ok {
				answered = time.Now()
			}
			return cmd, answered, ok
		}
		if err == nil {
			err = fmt.Errorf("result: HTTP %d: %.200s", resp.StatusCode(), resp.Body)
		}
		a.e.m.fail(err)
		_ = testkit.Sleep(ctx, 200*time.Millisecond)
	}
	return cmd, answered, ok
}

// pointResult is one row of the curve.
type pointResult struct {
	agents                int
	acked, expected       float64
	p50, p99, max         time.Duration
	errs, shed, timeouts  int64
	lapses, declared      int64
	down, unreachable     int
	placements            int
	delivP50, delivMax    time.Duration
	doneP50, doneMax      time.Duration
	srvCPU, pgCPU, ownCPU float64 // % of one core
	srvRSS, pgRSS         int64   // bytes
	configs, rejected     int64
	lastErr               string
	placeErr              string
	measured              time.Duration
	load1                 string
	api                   *apiResult   // --api-rate
	crash                 *crashResult // --crashes
	pool0, pool1          poolStats    // backstopd's API pool at the start and end
}

// measure resets the counters, runs the window (with placements) and
// collects the row.
func (e *env) measure(ctx context.Context, all []*agent, clusters []*loadCluster) (pointResult, error) {
	r := pointResult{agents: len(all)}
	// Bounded: a control plane far beyond capacity may not answer these
	// reads for minutes (4,000 agents on 2 cores); say so and stop.
	sctx, cancel := context.WithTimeout(ctx, eventReadsTimeout)
	seqs, err := e.eventSeqs(sctx, clusters)
	cancel()
	if err != nil {
		return r, fmt.Errorf("read the clusters' events before measuring (the API did not answer within %v: the control plane is beyond capacity?): %w", eventReadsTimeout, err)
	}
	m := e.m
	m.mu.Lock()
	m.latencies = m.latencies[:0]
	m.mu.Unlock()
	m.acked.Store(0)
	m.errs.Store(0)
	m.shed.Store(0)
	m.timeouts.Store(0)
	m.lapses.Store(0)
	m.declared.Store(0)
	logf("config fetches while the agents were added and warmed up: %d", m.configs.Swap(0))
	m.rejected.Store(0)
	var apiDone chan apiResult
	if e.o.apiRate > 0 {
		l, err := e.prepareAPILoad(ctx, clusters)
		if err != nil {
			return r, err
		}
		apiDone = make(chan apiResult, 1)
		go func() { apiDone <- l.run(ctx, e.o.duration) }()
	}
	r.pool0 = e.scrapePool(ctx)
	cpu0 := e.cpuTimes()
	start := time.Now()
	var hs []*loadHierarchy
	for _, c := range clusters {
		hs = append(hs, c.hierarchies...)
	}
	crashes := make(chan crashRun, 1)
	go func() { crashes <- e.runCrashes(ctx, hs, start) }()
	var lat placeLatency
	var placeErr error
	if e.o.placeEvery > 0 {
		for k := 0; time.Since(start) < e.o.duration; k++ {
			next := start.Add(time.Duration(k+1) * e.o.placeEvery)
			if h, done := e.crashes.pickSwitchover(hs); h != nil {
				if err := e.place(ctx, h, 1-h.on, &lat); err != nil && placeErr == nil {
					placeErr = err
					logf("placement: %v", err)
				}
				done()
			}
			if err := testkit.Sleep(ctx, time.Until(next)); err != nil {
				return r, err
			}
		}
	}
	if err := testkit.Sleep(ctx, time.Until(start.Add(e.o.duration))); err != nil {
		return r, err
	}
	end := time.Now()
	r.measured = end.Sub(start)
	cpu1 := e.cpuTimes()
	r.pool1 = e.scrapePool(ctx)
	if apiDone != nil {
		// The last requests' answers: the window's CPU is already taken.
		res := <-apiDone
		r.api = &res
	}
	secs := r.measured.Seconds()
	r.srvCPU = 100 * (cpu1.srv - cpu0.srv) / secs
	r.pgCPU = 100 * (cpu1.pg - cpu0.pg) / secs
	r.ownCPU = 100 * (cpu1.own - cpu0.own) / secs
	r.srvRSS, r.pgRSS = cpu1.srvRSS, cpu1.pgRSS
	r.acked = float64(m.acked.Load()) / secs
	r.expected = liveAgentSeconds(all, start, end) / secs * 1000 / float64(e.timing.HeartbeatMs)
	m.mu.Lock()
	lats := slices.Clone(m.latencies)
	m.mu.Unlock()
	r.p50, r.p99, r.max = pct(lats, 50), pct(lats, 99), pct(lats, 100)
	r.errs, r.shed, r.timeouts, r.lapses, r.declared = m.errs.Load(), m.shed.Load(), m.timeouts.Load(), m.lapses.Load(), m.declared.Load()
	r.configs, r.rejected = m.configs.Swap(0), m.rejected.Load()
	if p := m.lastErr.Swap(nil); p != nil {
		r.lastErr = *p
	}
	if placeErr != nil {
		r.placeErr = placeErr.Error()
	}
	r.placements = len(lat.done)
	r.delivP50, r.delivMax = pct(lat.delivered, 50), pct(lat.delivered, 100)
	r.doneP50, r.doneMax = pct(lat.done, 50), pct(lat.done, 100)
	// The crashes' take-overs, then every event of the window.
	cr := <-crashes
	evs, err := e.eventsAfter(ctx, clusters, seqs)
	if err != nil {
		return r, err
	}
	r.down, r.unreachable = e.countDetections(evs)
	if e.o.crashes > 0 {
		c := summarize(cr.watches, evs, e.o.crashes, cr.skipped)
		r.crash = &c
		for _, l := range c.timelines {
			logf("crash: %s", l)
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.load1 = strings.Fields(string(b))[0]
	}
	return r, nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

type event struct {
	Seq     int64             `json:"seq"`
	Type    string            `json:"type"`
	Subject map[string]string `json:"subject"`
	At      time.Time         `json:"at"`
}

func (e *env) events(ctx context.Context, cluster string, after int64) ([]event, error) {
	var page struct {
		Items []event `json:"items"`
	}
	_, err := e.api.Do(ctx, "GET", fmt.Sprintf("/v1/clusters/%s/events?after=%d&limit=500", cluster, after), nil, 200, &page)
	return page.Items, err
}

// eventReadsTimeout bounds the event reads that start a point.
const eventReadsTimeout = 2 * time.Minute

// eventSeqs returns the newest event seq of every cluster.
func (e *env) eventSeqs(ctx context.Context, clusters []*loadCluster) (map[string]int64, error) {
	seqs := map[string]int64{}
	for _, c := range clusters {
		for {
			evs, err := e.events(ctx, c.id, seqs[c.id])
			if err != nil {
				return nil, err
			}
			if len(evs) == 0 {
				break
			}
			seqs[c.id] = evs[len(evs)-1].Seq
		}
	}
	return seqs, nil
}

// eventsAfter reads every cluster's events after seqs.
func (e *env) eventsAfter(ctx context.Context, clusters []*loadCluster, seqs map[string]int64) ([]event, error) {
	var all []event
	for _, c := range clusters {
		seq := seqs[c.id]
		for {
			evs, err := e.events(ctx, c.id, seq)
			if err != nil {
				return nil, err
			}
			if len(evs) == 0 {
				break
			}
			all = append(all, evs...)
			seq = evs[len(evs)-1].Seq
		}
	}
	return all, nil
}

// countDetections counts the node.down and node.unreachable events of
// nodes whose agent ran: each is a false detection. Those of a node
// crashed on purpose (--crashes) from its crash on are counted with the
// crash (the event's time is backstopd's clock, the crash's agentload's:
// the same host's unless --url points elsewhere).
func (e *env) countDetections(evs []event) (down, unreachable int) {
	for _, ev := range evs {
		if a := e.byNode[ev.Subject["node_id"]]; a != nil && a.crashedBy(ev.At) {
			continue
		}
		switch ev.Type {
		case "node.down":
			down++
		case "node.unreachable":
			unreachable++
		}
	}
	return down, unreachable
}

// cpu is CPU seconds used so far and resident memory.
type cpu struct {
	srv, pg, own  float64
	srvRSS, pgRSS int64
}

var clkTck = 100.0 // sysconf(_SC_CLK_TCK) on Linux

// procStat returns a process's utime+stime (and cutime+cstime when
// children is set) in seconds, and its parent PID.
func procStat(pid int, children bool) (float64, int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:]) // f[0] is field 3 (state)
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k-3], 64); return v }
	t := num(14) + num(15)
	if children {
		t += num(16) + num(17)
	}
	ppid, _ := strconv.Atoi(f[1])
	return t / clkTck, ppid, true
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// cpuTimes reads backstopd's, PostgreSQL's (the postmaster with its
// reaped children, plus every live backend) and this process's CPU time.
func (e *env) cpuTimes() cpu {
	var c cpu
	c.own, _, _ = procStat(os.Getpid(), false)
	if e.serverPID > 0 {
		c.srv, _, _ = procStat(e.serverPID, false)
		c.srvRSS = rss(e.serverPID)
	}
	if e.pgPID > 0 {
		c.pg, _, _ = procStat(e.pgPID, true)
		c.pgRSS = rss(e.pgPID)
		ents, _ := os.ReadDir("/proc")
		for _, d := range ents {
			pid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			if t, ppid, ok := procStat(pid, false); ok && ppid == e.pgPID {
				c.pg += t
				c.pgRSS += rss(pid)
			}
		}
	}
	return c
}

func printRows(w io.Writer, o options, rows []pointResult, header bool) {
	if header {
		fmt.Fprintf(w, "agentload: profile %s, %d nodes per cluster, %d hierarchies per cluster; %v measured per point after %v warm-up\n",
			o.profile, o.clusterSize, o.hierarchies, o.duration, o.warmup)
		apiCol, apiSep := "", ""
		if o.apiRate > 0 {
			apiCol, apiSep = fmt.Sprintf(" API GET at %d/s p50 / p99 / max ms (errors) |", o.apiRate), "---|"
		}
		fmt.Fprintln(w, "| agents | heartbeats/s acked / expected | p50 / p99 / max ms | errors (503 shed, timeouts) | lease lapses | declared down / unreachable | placement delivered p50/max, done p50/max ms (n) | backstopd CPU / RSS | PostgreSQL CPU / RSS | agentload CPU | load1 |"+apiCol)
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|"+apiSep)
	}
	for _, r := range rows {
		apiCell := ""
		if header && r.api != nil {
			apiCell = fmt.Sprintf(" %.1f / %.1f / %.0f (%s) |", msf(r.api.p50), msf(r.api.p99), msf(r.api.max), r.api.errString())
		}
		fmt.Fprintf(w, "| %d | %.0f / %.0f | %.1f / %.1f / %.0f | %d (%d, %d) | %d | %d / %d | %.0f/%.0f, %.0f/%.0f (%d) | %.0f%% / %.0f MB | %.0f%% / %.0f MB | %.0f%% | %s |%s\n",
			r.agents, r.acked, r.expected, msf(r.p50), msf(r.p99), msf(r.max), r.errs, r.shed, r.timeouts, r.lapses,
			r.down, r.unreachable, msf(r.delivP50), msf(r.delivMax), msf(r.doneP50), msf(r.doneMax), r.placements,
			r.srvCPU, float64(r.srvRSS)/1e6, r.pgCPU, float64(r.pgRSS)/1e6, r.ownCPU, r.load1, apiCell)
		if !header {
			if r.api != nil {
				fmt.Fprintf(w, "  API GET at %d/s (open loop, from the scheduled time): %d sent, p50 / p99 / max %.1f / %.1f / %.0f ms, errors %s; p99 ms by read: %s\n",
					o.apiRate, r.api.sent, msf(r.api.p50), msf(r.api.p99), msf(r.api.max), r.api.errString(), r.api.byKindString())
			}
			if r.pool0.ok && r.pool1.ok {
				acq, waited, waitS := r.pool1.acquires-r.pool0.acquires, r.pool1.waited-r.pool0.waited, r.pool1.waitS-r.pool0.waitS
				fmt.Fprintf(w, "  backstopd API pool: %.0f acquires, %.0f waited for a connection (%.1f%%), %.1f ms waited on average\n",
					acq, waited, 100*waited/max(acq, 1), 1000*waitS/max(waited, 1))
			}
			if r.crash != nil {
				printCrashes(w, r.crash)
			}
			fmt.Fprintf(w, "  config fetches %d, commands rejected %d, declared-down answers %d", r.configs, r.rejected, r.declared)
			if r.lastErr != "" {
				fmt.Fprintf(w, ", last error: %.300s", r.lastErr)
			}
			if r.placeErr != "" {
				fmt.Fprintf(w, ", placement error: %.300s", r.placeErr)
			}
			fmt.Fprintln(w)
		}
	}
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
