package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/pki"
)

// TestTransportSecurity runs one TLS-first cluster (backstopd with a
// certificate of the tests' CA, two agents pinned to it through their
// enrollment tokens) and checks, in order: the agents pinned the CA; an
// agent given another CA's fingerprint refuses to enroll and stores
// nothing; the agent API refuses a valid credential without the client
// certificate of the node's enrolled key; a certificate rotated on disk
// reaches new connections without a restart and without an agent outage;
// backstopctl against an unknown CA fails with a message naming the cure.
func TestTransportSecurity(t *testing.T) {
	nc := newNSCluster(t, 2, "lan", 1)
	d := nc.daemons[0]

	t.Run("agents pinned the CA", func(t *testing.T) {
		if parts := strings.Split(nc.tokens[0], "."); len(parts) != 3 || parts[2] != env.ca.Fingerprint() {
			t.Fatalf("enrollment token %q does not end with the CA's fingerprint %s", nc.tokens[0], env.ca.Fingerprint())
		}
		for _, a := range nc.agents {
			b, err := os.ReadFile(filepath.Join(a.dir, "control_plane_ca.pem"))
			if err != nil || !bytes.Equal(b, env.ca.PEM()) {
				t.Fatalf("%s saved CA: %v %q", a.name, err, b)
			}
		}
	})

	t.Run("wrong CA fingerprint refuses to enroll", func(t *testing.T) {
		var nd struct {
			ID    string `json:"id"`
			Token string `json:"enrollment_token"`
		}
		nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/nodes", map[string]any{"name": "intruder"}).must(t, 201).decode(t, &nd)
		other, err := pki.NewCA("someone else's CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tok := nd.Token[:strings.LastIndexByte(nd.Token, '.')+1] + other.Fingerprint()
		dir := t.TempDir()
		out, code := runAgentOnce(t, "--server", d.url(), "--data-dir", dir, "--enroll-token", tok, "--fence-guard=false", "--metrics-listen", "off")
		if code == 0 || !strings.Contains(out, "refusing to enroll") || !strings.Contains(out, other.Fingerprint()) {
			t.Fatalf("agent with a wrong CA fingerprint: exit %d, output:\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "identity.json")); err == nil {
			t.Fatal("the refused agent stored an identity")
		}
		var n struct {
			State string `json:"state"`
		}
		nc.c.do(t, "GET", "/v1/clusters/"+nc.id+"/nodes/"+nd.ID, nil).must(t, 200).decode(t, &n)
		if n.State != "pending" {
			t.Fatalf("node after a refused enrollment: %s; want pending (token unused)", n.State)
		}
		nc.c.do(t, "DELETE", "/v1/clusters/"+nc.id+"/nodes/"+nd.ID, nil).must(t, 204)
	})

	t.Run("credential without the client certificate is 401", func(t *testing.T) {
		a := nc.agents[0]
		var id struct {
			Credential string `json:"credential"`
		}
		b, err := os.ReadFile(filepath.Join(a.dir, "identity.json"))
		if err != nil || json.Unmarshal(b, &id) != nil || id.Credential == "" {
			t.Fatalf("identity: %v %s", err, b)
		}
		key := readAgentKey(t, filepath.Join(a.dir, "agent.key"))
		_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
		for _, c := range []struct {
			name string
			key  ed25519.PrivateKey
			want int
		}{{"no client certificate", nil, 401}, {"another key's certificate", otherKey, 401}, {"the enrolled key's certificate", key, 200}} {
			cfg := &tls.Config{RootCAs: env.caPool}
			if c.key != nil {
				cert, err := pki.ClientCertificate(c.key, "test")
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificates = []tls.Certificate{*cert}
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
			req, _ := http.NewRequestWithContext(t.Context(), "GET", d.url()+"/agent/v1/config", nil)
			req.Header.Set("Authorization", "Bearer "+id.Credential)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("%s: %d %s; want %d", c.name, resp.StatusCode, body, c.want)
			}
			if c.want == 401 && (resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), "client certificate")) {
				t.Fatalf("%s: %s %s; want a problem naming the client certificate", c.name, resp.Header.Get("Content-Type"), body)
			}
		}
	})

	t.Run("certificate rotated on disk", func(t *testing.T) {
		before := servedSerial(t, d)
		hosts := []string{"127.0.0.1", "localhost", nc.top.hostAddr()}
		if err := env.ca.WriteServer(d.tls, hosts, time.Hour); err != nil {
			t.Fatal(err)
		}
		rotated := time.Now()
		testkit.Eventually(t, 30*time.Second, "new connections get the rotated certificate", func() bool {
			return servedSerial(t, d).Cmp(before) != 0
		})
		t.Logf("rotated certificate served to new connections after %v", time.Since(rotated))
		// The agents' connections, kept alive, go on; an agent that
		// starts again connects anew and trusts the new certificate (it
		// chains to the pinned CA).
		a := nc.agents[0]
		_ = syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM)
		<-a.exited
		nc.sameMachine(0)
		a.start(nc.servers(), "")
		testkit.Eventually(t, 30*time.Second, "the restarted agent heartbeats over a new connection", func() bool {
			return len(a.logLines("event", "agent_started")) >= 2 && nc.nodeState(0) == "up" && heartbeatsSince(nc, 0, rotated)
		})
		for i := range nc.agents {
			if s := nc.nodeState(i); s != "up" {
				t.Fatalf("node%d is %s after the rotation", i+1, s)
			}
		}
		if evs := nc.events(); slices.Contains(evs, "node.down") {
			t.Fatalf("an agent outage during the rotation: events %v", evs)
		}
	})

	t.Run("backstopctl against an unknown CA", func(t *testing.T) {
		run := func(args ...string) (string, int) {
			cmd := exec.CommandContext(t.Context(), env.ctl, append([]string{"--server", d.url(), "--token", adminSecret}, args...)...)
			cmd.Env = daemonEnv("")
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return string(out), code
		}
		out, code := run("clusters", "list")
		if code != 1 || !strings.Contains(out, "unknown authority") || !strings.Contains(out, "--ca-file") {
			t.Fatalf("backstopctl without the CA: exit %d:\n%s", code, out)
		}
		t.Logf("backstopctl without the CA says: %s", strings.TrimSpace(out))
		if out, code := run("--ca-file", env.caFile, "clusters", "list"); code != 0 || !strings.Contains(out, "e2e-") {
			t.Fatalf("backstopctl with --ca-file: exit %d:\n%s", code, out)
		}
	})
}

// runAgentOnce runs backstop-agent on the host until it exits (within a
// minute) and returns its output and exit status.
func runAgentOnce(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), env.agent, args...)
	cmd.Env = daemonEnv("")
	cmd.SysProcAttr = childAttr()
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("agent still running after a minute:\n%s", out)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func readAgentKey(t *testing.T, path string) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(ed25519.PrivateKey)
}

// servedSerial is the serial number of the certificate a new connection
// to d gets.
func servedSerial(t *testing.T, d *daemon) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", d.addr, &tls.Config{RootCAs: env.caPool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// heartbeatsSince reports whether node i's last heartbeat is later than t0.
func heartbeatsSince(nc *nsCluster, i int, t0 time.Time) bool {
	var n struct {
		Agent *struct {
			LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
		} `json:"agent"`
	}
	nc.c.do(nc.t, "GET", "/v1/clusters/"+nc.id+"/nodes/"+nc.nodes[i], nil).must(nc.t, 200).decode(nc.t, &n)
	return n.Agent != nil && n.Agent.LastHeartbeatAt.After(t0)
}
