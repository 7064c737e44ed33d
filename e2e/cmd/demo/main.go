//go:build linux

// Command demo is `make demo`: a Backstop cluster that protects a service
// and fails it over while you watch.
//
// As root it starts a throwaway PostgreSQL, backstopd, and three nodes
// built out of network namespaces (e2e/internal/nslab: a bridge, each node
// with two links, 198.19.K.0/24), each running a real backstop-agent; the
// agents protect Postfix behind a virtual IP (the ip ← volume ← service ←
// smtp hierarchy of the e2e mail tests), placed on mx1, and a client sends
// a message through the virtual IP every half second. It prints the
// console URL, an admin token, and shell one-liners that crash the active
// node or cut its cables, then follows the hierarchy and reports each
// move (and whether mail still flows) as it happens. Enter brings crashed
// or cut nodes back.
//
// Without root (or with --loopback) the same runs on the loopback
// interface: the agents are plain processes and protect a TCP service on
// 127.0.0.1 without a virtual IP; the one-liner kills the active node's
// agent, whose fence guard then stops the service when its lease runs
// out, as if the machine had died.
//
// Ctrl-C removes everything: agents, services, namespaces, backstopd,
// PostgreSQL and the data directory.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/backstop-ha/backstop/e2e/internal/nslab"
	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/pki"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/pgtemp"
)

type options struct {
	backstopd, agent, tcpecho string
	loopback                  bool
	profile                   string
}

func main() {
	var o options
	flag.StringVar(&o.backstopd, "backstopd", "", "backstopd binary (default: go build ./cmd/backstopd)")
	flag.StringVar(&o.agent, "agent", "", "backstop-agent binary (default: go build ./cmd/backstop-agent)")
	flag.StringVar(&o.tcpecho, "tcpecho", "", "the loopback mode's service (default: go build ./e2e/internal/tcpecho)")
	flag.BoolVar(&o.loopback, "loopback", false, "run on loopback without namespaces even as root")
	flag.StringVar(&o.profile, "profile", "lan", "timing profile of the cluster: fast, lan or wan")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo is what run set up: enough to print, follow and clean up.
type demo struct {
	out     io.Writer
	dir     string
	token   string
	base    string // backstopd's base URL
	caFile  string // the throwaway CA of its certificate (the agents pin it)
	api     *nslab.Client
	cluster string // its id
	hier    string // the protected hierarchy's id
	hname   string
	nodes   []string // node names
	nodeIDs []string

	// root mode
	c      *nslab.Cluster
	mail   *nslab.Mail
	sender *nslab.Sender

	// loopback mode
	daemon  *nslab.Daemon
	agents  []*nslab.Agent
	svcAddr string
}

func run(ctx context.Context, o options, stdin io.Reader, out io.Writer) error {
	root := os.Geteuid() == 0 && !o.loopback
	if root {
		if err := nslab.RequireRoot(); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "backstop-demo-")
	if err != nil {
		return err
	}
	d := &demo{out: out, dir: dir, hname: "postfix", nodes: []string{"mx1", "mx2", "mx3"}}
	defer func() {
		os.RemoveAll(dir)
	}()
	// Postfix's user must traverse the data directory (MkdirTemp: 0700).
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}

	bins, err := nslab.Binaries{Backstopd: o.backstopd, Agent: o.agent, TCPEcho: o.tcpecho}.Build(ctx, filepath.Join(dir, "bin"), func(pkg string) { fmt.Printf("Building %s ...\n", pkg) })
	if err != nil {
		return err
	}
	say(out, "Starting a throwaway PostgreSQL ...")
	pg, err := pgtemp.Start(ctx, pgtemp.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := pg.Stop(); err != nil {
			fmt.Fprintln(out, "stop PostgreSQL:", err)
		}
	}()
	d.token = store.NewSecret(store.TokenPrefix)
	seal := store.NewSecret("")

	if root {
		err = d.startNamespaces(ctx, bins, pg.URL("postgres"), seal, o.profile)
	} else {
		err = d.startLoopback(ctx, bins, pg.URL("postgres"), seal, o.profile)
	}
	defer d.close()
	if err != nil {
		return err
	}

	d.banner(root, pg)
	lines := make(chan struct{})
	go func() { // Enter: bring crashed or cut nodes back
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	d.follow(ctx, root, lines)
	say(out, "\nStopping: agents, services, namespaces, backstopd, PostgreSQL and %s go.", dir)
	return nil
}

func say(w io.Writer, format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }

// startNamespaces builds the root mode's cluster: three namespace nodes
// protecting Postfix behind a virtual IP.
func (d *demo) startNamespaces(ctx context.Context, bins nslab.Binaries, dbURL, seal, profile string) error {
	say(d.out, "Building three nodes out of network namespaces, with backstopd and an agent on each ...")
	c, err := nslab.NewCluster(ctx, nslab.ClusterOptions{Bins: bins, DatabaseURL: dbURL, Profile: profile, Nodes: 3,
		Dir: d.dir, Prefix: "bd", AdminToken: d.token, SealKey: seal, Name: "mail", NodeNames: d.nodes})
	d.c = c
	if err != nil {
		return err
	}
	d.api, d.base, d.cluster, d.nodeIDs, d.caFile = c.API, c.Daemon.URL(), c.ID, c.NodeIDs, c.Daemon.CAFile
	d.mail, err = nslab.NewMail(filepath.Join(d.dir, "mail"), c.Top.VIP(1), c.Top.Subnet)
	if err != nil {
		return err
	}
	if d.hier, err = c.CreateHierarchy(ctx, d.hname, d.mail.Resources(), []int{0, 1, 2}); err != nil {
		return err
	}
	say(d.out, "Bringing Postfix in service on mx1 (virtual IP %s) ...", d.mail.VIP)
	// A first start can be slow on a loaded machine (Postfix's start
	// past the service kit's pid-file wait): clear the failed mark it
	// leaves and try again, as an operator would, before giving up.
	for attempt := 1; ; attempt++ {
		err := c.InService(ctx, d.hier, 0)
		if err == nil || attempt == 3 || ctx.Err() != nil {
			if err != nil {
				return err
			}
			break
		}
		say(d.out, "The first start failed (%v); clearing mx1's failed mark and trying again ...", err)
		if err := c.ClearFailedMark(ctx, d.hier, 0); err != nil {
			return err
		}
	}
	d.sender = d.mail.StartSender(500 * time.Millisecond)
	return nil
}

// startLoopback builds the mode without root: backstopd and three agents
// on loopback protecting a TCP service (no virtual IP).
func (d *demo) startLoopback(ctx context.Context, bins nslab.Binaries, dbURL, seal, profile string) error {
	d.hname = "echo"
	say(d.out, "Starting backstopd and three agents on loopback ...")
	ca, err := pki.NewCA("Backstop demo CA", 7*24*time.Hour)
	if err != nil {
		return err
	}
	certs, err := ca.WriteFiles(filepath.Join(d.dir, "tls"), []string{"127.0.0.1", "localhost"}, 7*24*time.Hour)
	if err != nil {
		return err
	}
	dm, err := nslab.StartBackstopd(ctx, bins.Backstopd, "127.0.0.1", dbURL, d.token, seal, filepath.Join(d.dir, "backstopd.log"), &certs)
	if err != nil {
		return err
	}
	d.daemon, d.base, d.caFile = dm, dm.URL(), dm.CAFile
	d.api = &nslab.Client{Base: d.base, Token: d.token, HTTP: dm.HTTPClient(10 * time.Second)}
	var cl struct {
		ID string `json:"id"`
	}
	if _, err := d.api.Do(ctx, "POST", "/v1/clusters", map[string]any{"name": "demo", "timing_profile": profile,
		"description": "backstop demo on loopback"}, 201, &cl); err != nil {
		return err
	}
	d.cluster = cl.ID
	var tokens []string
	for _, n := range d.nodes {
		var nd struct {
			ID    string `json:"id"`
			Token string `json:"enrollment_token"`
		}
		if _, err := d.api.Do(ctx, "POST", d.path("/nodes"), map[string]any{"name": n}, 201, &nd); err != nil {
			return err
		}
		d.nodeIDs, tokens = append(d.nodeIDs, nd.ID), append(tokens, nd.Token)
	}
	// Each node heartbeats its peers from an address of its own:
	// Linux routes all of 127/8 to lo.
	for i := range d.nodes {
		for j := i + 1; j < len(d.nodes); j++ {
			if _, err := d.api.Do(ctx, "POST", d.path("/paths"), map[string]any{
				"a": map[string]any{"node_id": d.nodeIDs[i], "address": fmt.Sprintf("127.0.0.%d", 11+i)},
				"b": map[string]any{"node_id": d.nodeIDs[j], "address": fmt.Sprintf("127.0.0.%d", 11+j)},
			}, 201, nil); err != nil {
				return err
			}
		}
	}
	for i, n := range d.nodes {
		a, err := nslab.NewLocalAgent(bins.Agent, n, d.dir)
		if err != nil {
			return err
		}
		if err := a.StartLocal(d.base, tokens[i], "DEMO_NODE="+n); err != nil {
			return err
		}
		d.agents = append(d.agents, a)
	}
	for i := range d.nodes {
		if err := d.waitNodeUp(ctx, i); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	d.svcAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var h struct {
		ID string `json:"id"`
	}
	var ps []map[string]any
	for i, id := range d.nodeIDs {
		ps = append(ps, map[string]any{"node_id": id, "priority": i + 1})
	}
	if _, err := d.api.Do(ctx, "POST", d.path("/hierarchies"), map[string]any{"name": d.hname, "priorities": ps,
		"resources": []map[string]any{{"name": "echo", "kind": "service", "params": map[string]any{
			"start": fmt.Sprintf(`exec %s --listen %s --name "$DEMO_NODE"`, bins.TCPEcho, d.svcAddr), "stop_timeout_ms": 2000},
			"quick_check": map[string]any{"interval_ms": 500, "timeout_ms": 250}}},
	}, 201, &h); err != nil {
		return err
	}
	d.hier = h.ID
	say(d.out, "Bringing the echo service in service on mx1 (%s) ...", d.svcAddr)
	return d.inService(ctx, 0)
}

func (d *demo) path(p string) string { return "/v1/clusters/" + d.cluster + p }

func (d *demo) waitNodeUp(ctx context.Context, i int) error {
	end := time.Now().Add(time.Minute)
	for time.Now().Before(end) {
		var n struct {
			State string `json:"state"`
		}
		if _, err := d.api.Do(ctx, "GET", d.path("/nodes/"+d.nodeIDs[i]), nil, 200, &n); err == nil && n.State == "up" {
			return nil
		}
		if err := testkit.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("node %s is not up after a minute (log %s)", d.nodes[i], d.agents[i].LogPath)
}

func (d *demo) inService(ctx context.Context, i int) error {
	r, err := d.api.Do(ctx, "POST", d.path("/hierarchies/"+d.hier+"/in-service"), map[string]any{"node_id": d.nodeIDs[i]}, 202, nil)
	if err != nil {
		return err
	}
	end := time.Now().Add(time.Minute)
	for time.Now().Before(end) {
		var op struct {
			State  string `json:"state"`
			Detail string `json:"detail"`
		}
		if _, err := d.api.Do(ctx, "GET", r.Location, nil, 200, &op); err != nil {
			return err
		}
		switch op.State {
		case "succeeded":
			return nil
		case "failed":
			return fmt.Errorf("bring %s in service on %s: %s", d.hname, d.nodes[i], op.Detail)
		}
		if err := testkit.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return errors.New("the in-service operation did not end within a minute")
}

// caFingerprint is the SHA-256 fingerprint of the CA certificate in path.
func caFingerprint(path string) string {
	cs, err := pki.ReadCertificates(path)
	if err != nil {
		return "?"
	}
	return pki.Fingerprint(cs[0].Raw)
}

// banner prints how to reach everything and how to break it.
func (d *demo) banner(root bool, pg *pgtemp.Server) {
	w := d.out
	say(w, "")
	say(w, "Backstop demo is running.")
	say(w, "")
	say(w, "  Console:      %s/ui", d.base)
	say(w, "  API:          %s/v1   (reference: %s/openapi.yaml)", d.base, d.base)
	say(w, "  Admin token:  %s", d.token)
	say(w, "  TLS:          a throwaway CA, %s (SHA-256 %s): agents pin it;", d.caFile, caFingerprint(d.caFile))
	say(w, "                your browser warns about it: accept it for this demo, or import the file")
	say(w, "  CLI:          export BACKSTOP_URL=%s BACKSTOP_TOKEN=%s BACKSTOP_CA_FILE=%s", d.base, d.token, d.caFile)
	say(w, "                go run ./cmd/backstopctl status %s --watch", d.clusterName(root))
	say(w, "  Data:         %s (PostgreSQL on port %d)", d.dir, pg.Port())
	if root {
		say(w, "  Mail:         a client sends a message to %s:25 every 0.5 s; they land in %s", d.mail.VIP, filepath.Join(d.mail.Dir, "vol", "vmail", "alice"))
	} else {
		say(w, "  Service:      %s answers with the name of the node it runs on: nc %s %s", d.svcAddr, "127.0.0.1", d.svcAddr[strings.LastIndex(d.svcAddr, ":")+1:])
		say(w, "")
		say(w, "  Without root this demo runs on loopback. As root (sudo make demo) it builds the nodes")
		say(w, "  out of network namespaces and protects Postfix behind a virtual IP, with mail flowing")
		say(w, "  through the failover, and you can cut a node's cables, not only crash it.")
	}
	say(w, "")
	d.printActions(root, 0)
	say(w, "")
	say(w, "Press Enter to bring crashed or cut nodes back; Ctrl-C to stop and remove everything.")
	say(w, "")
}

func (d *demo) clusterName(root bool) string {
	if root {
		return "mail"
	}
	return "demo"
}

// printActions prints the one-liners that break node i, the active one.
func (d *demo) printActions(root bool, i int) {
	w := d.out
	n := d.nodes[i]
	if root {
		say(w, "Watch the failover: in another terminal, as root,")
		say(w, "  crash %s:       sudo sh -c '%s'", n, d.c.Top.CrashCommand(i))
		say(w, "  cut %s's cables: sudo sh -c '%s'", n, d.c.Top.CutCommand(i))
		return
	}
	say(w, "Watch the failover: in another terminal,")
	say(w, "  crash %s:  kill -9 %d   (its agent dies; its fence guard stops the service when the lease runs out)", n, d.agents[i].Proc.Cmd.Process.Pid)
}

// follow reports every change of the hierarchy's placement until ctx
// ends; a line on lines brings crashed or cut nodes back.
func (d *demo) follow(ctx context.Context, root bool, lines <-chan struct{}) {
	type placement struct {
		NodeID string `json:"node_id"`
		State  string `json:"state"`
		Epoch  int64  `json:"epoch"`
	}
	var last placement
	active := "" // the node it was last in service on
	lastMailOK := true
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lines:
			d.heal(ctx, root)
		case <-tick.C:
		}
		var h struct {
			Placement placement `json:"placement"`
		}
		if _, err := d.api.Do(ctx, "GET", d.path("/hierarchies/"+d.hier), nil, 200, &h); err == nil && h.Placement != last {
			p := h.Placement
			node := d.nodeName(p.NodeID)
			say(d.out, "%s  %s: %s on %s (epoch %d)", now(), d.hname, strings.ReplaceAll(p.State, "_", " "), node, p.Epoch)
			if p.State == "in_service" && p.NodeID != active {
				if active != "" {
					d.reportIncident(ctx)
					if i := d.nodeIndex(p.NodeID); i >= 0 {
						d.printActions(root, i)
					}
				}
				active = p.NodeID
			}
			last = h.Placement
		}
		if d.sender != nil {
			acc, failed, lastErr := d.sender.Counts()
			ok := (acc == 0 && failed == 0) || d.sender.LastOK().After(time.Now().Add(-2*time.Second))
			if ok != lastMailOK {
				if ok {
					say(d.out, "%s  mail flows again: %d accepted, %d delivered so far (%d attempts failed while it moved)", now(), acc, d.mail.Delivered(), failed)
				} else {
					say(d.out, "%s  mail is not accepted right now (%s); the client retries", now(), lastErr)
				}
				lastMailOK = ok
			}
		}
	}
}

func (d *demo) reportIncident(ctx context.Context) {
	var page struct {
		Items []struct {
			Kind       string `json:"kind"`
			Reason     string `json:"reason"`
			RecoveryMS *int64 `json:"recovery_ms"`
		} `json:"items"`
	}
	if _, err := d.api.Do(ctx, "GET", d.path("/incidents?limit=500"), nil, 200, &page); err != nil || len(page.Items) == 0 {
		return
	}
	in := page.Items[len(page.Items)-1]
	rec := "still open"
	if in.RecoveryMS != nil {
		rec = fmt.Sprintf("in service again after %d ms", *in.RecoveryMS)
	}
	say(d.out, "%s  incident: %s (%s), %s", now(), in.Kind, in.Reason, rec)
}

// heal brings back every node whose agent died (a reboot: addresses
// flushed, links up, agent started) and reconnects cut cables.
func (d *demo) heal(ctx context.Context, root bool) {
	for i, n := range d.nodes {
		var a *nslab.Agent
		if root {
			a = d.c.Agents[i]
		} else {
			a = d.agents[i]
		}
		switch {
		case a.Proc.Exited() && root:
			if err := d.c.Reboot(i); err != nil {
				say(d.out, "reboot %s: %v", n, err)
				continue
			}
			say(d.out, "%s  %s rebooted (empty) and its agent started", now(), n)
		case a.Proc.Exited():
			if err := a.StartLocal(d.base, "", "DEMO_NODE="+n); err != nil {
				say(d.out, "restart %s's agent: %v", n, err)
				continue
			}
			say(d.out, "%s  %s's agent started again", now(), n)
		case root:
			if err := d.c.Top.SetLink(i, true); err != nil {
				say(d.out, "reconnect %s: %v", n, err)
			}
		}
	}
	if root {
		say(d.out, "%s  every node's cables are connected", now())
	}
	_ = ctx
}

func (d *demo) nodeName(id string) string {
	if i := d.nodeIndex(id); i >= 0 {
		return d.nodes[i]
	}
	if id == "" {
		return "no node"
	}
	return id
}

func (d *demo) nodeIndex(id string) int {
	for i, x := range d.nodeIDs {
		if x == id {
			return i
		}
	}
	return -1
}

// close stops everything that was started, in reverse order.
func (d *demo) close() {
	if d.sender != nil {
		d.sender.Stop()
	}
	if d.c != nil {
		d.c.Close() // agents, every process of the namespaces, the namespaces, backstopd
	}
	for _, a := range d.agents {
		if a.Proc != nil {
			a.Kill()
		}
	}
	for _, a := range d.agents {
		killGuardOf(a)
		d.killServiceOf(a)
	}
	if d.daemon != nil {
		d.daemon.Stop(10 * time.Second)
	}
}

// killGuardOf kills the agent's fence guard, which runs in a session of
// its own and outlives the agent by design; it is found by its command
// line, which names the agent's data directory (unique to this demo).
func killGuardOf(a *nslab.Agent) {
	want := "guard --data-dir " + a.DataDir + " "
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), want) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// killServiceOf stops the loopback mode's service an agent left running
// (the service kit runs it in a process group of its own, recorded in
// service.pid under the agent's data directory).
func (d *demo) killServiceOf(a *nslab.Agent) {
	_ = filepath.WalkDir(a.DataDir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.Name() != "service.pid" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if pid, err := strconv.Atoi(strings.Fields(string(b) + " 0")[0]); err == nil && pid > 1 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return nil
	})
}

func now() string { return time.Now().Format("15:04:05.000") }

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
