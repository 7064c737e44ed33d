package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// The scenarios of this file take the agent alone away from a node that
// keeps running, with its service and its virtual IP: the fault that a
// dead node's fencing does not cover, because the agent itself sends the
// heartbeats and path heartbeats. The fence guard (nodeagent/guard.go)
// must stop the node serving before the control plane moves the
// hierarchy; the never-two-copies checker samples every node throughout,
// node 1 included (it is not crashed, so what it holds counts).

// guardLines returns the fence guard's JSON log records of node i that
// have key=value.
func (nc *nsCluster) guardLines(i int, key, value string) []map[string]any {
	f, err := os.Open(filepath.Join(nc.agents[i].dir, "guard.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var m map[string]any
		if json.Unmarshal(s.Bytes(), &m) == nil && fmt.Sprint(m[key]) == value {
			out = append(out, m)
		}
	}
	return out
}

// agentFaultFailover checks the end of a scenario in which node 1's agent
// went away at `since`: the guard fenced node 1, the hierarchy moved to
// node 2 and answers there, and node 1 runs nothing.
func (nc *nsCluster) agentFaultFailover(h, vip string, since time.Time) {
	t := nc.t
	t.Helper()
	nc.waitPlaced(h, 1, 30*time.Second)
	testkit.Eventually(t, 0, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
	t.Logf("agent fault → service answering on node2 through the VIP: %v", time.Since(since))
	if len(nc.guardLines(0, "event", "guard_fenced")) == 0 {
		t.Errorf("node1's fence guard did not fence; its log:\n%s", nc.guardLog(0))
	}
	if got := nc.top.listeners(vip, 7000); slices.Contains(got, 0) {
		t.Errorf("node1 still runs the service: %v", got)
	}
	if got := nc.top.holders(vip); slices.Contains(got, 0) {
		t.Errorf("node1 still holds the VIP: %v", got)
	}
}

func (nc *nsCluster) guardLog(i int) string {
	b, _ := os.ReadFile(filepath.Join(nc.agents[i].dir, "guard.log"))
	return string(b)
}

// guardPID returns the pid of node i's running fence guard, 0 if none.
func (nc *nsCluster) guardPID(i int) int {
	ls := nc.guardLines(i, "event", "guard_started")
	for k := len(ls) - 1; k >= 0; k-- {
		if pid, ok := ls[k]["pid"].(float64); ok && syscall.Kill(int(pid), 0) == nil {
			return int(pid)
		}
	}
	return 0
}

// sameMachine makes node i's next agent start join the mount namespace of
// its running guard: an agent restarted on a machine that kept running
// sees the mounts of the one before.
func (nc *nsCluster) sameMachine(i int) {
	nc.t.Helper()
	pid := nc.guardPID(i)
	if pid == 0 {
		nc.t.Fatalf("node%d has no running fence guard; its log:\n%s", i+1, nc.guardLog(i))
	}
	nc.agents[i].mntPID = pid
}

// restartAgent starts node i's agent again (what systemd's Restart=always
// does) and waits for the node to be up with nothing running twice.
func (nc *nsCluster) restartAgent(i int) {
	nc.agents[i].kill() // reap it if it is still there (stopped, killed by the guard)
	nc.sameMachine(i)
	nc.agents[i].start(nc.servers(), "")
	nc.waitNodeState(i, "up", 30*time.Second)
}

// TestAgentKilledFencedByGuard protects "never two copies" when the agent
// is SIGKILLed (a crash, the OOM killer) on a node that keeps running: the
// fence guard kills the service and drops the VIP at the lease deadline,
// before the control plane declares the node down and fails over; the
// restarted agent reports the fencing and restarts nothing.
func TestAgentKilledFencedByGuard(t *testing.T) {
	for _, profile := range []string{"lan", "fast"} {
		t.Run(profile, func(t *testing.T) {
			nc, h, vip, inv := newPlacedCluster(t, 3, profile, 1, nil)
			killed := time.Now()
			_ = syscall.Kill(nc.agents[0].cmd.Process.Pid, syscall.SIGKILL)
			nc.agentFaultFailover(h, vip, killed)
			nc.hasEvents("node.down", "failover.started", "failover.completed")
			nc.restartAgent(0)
			testkit.Eventually(t, 0, "the guard's fencing reported by the restarted agent", func() bool {
				return slices.Contains(nc.events(), "node.self_fenced")
			})
			if n := len(nc.agents[0].logLines("event", "local_restart")); n > 0 {
				t.Errorf("the restarted agent restarted resources %d times", n)
			}
			inv.check(t)
		})
	}
}

// TestAgentStoppedFencedByGuard protects "never two copies" when the agent
// hangs (SIGSTOP for 10 s: stuck I/O, a livelock): it can neither renew
// nor vouch, so the guard fences the node and, as the agent does not
// acknowledge, kills it, so that it cannot wake up with a stale view.
func TestAgentStoppedFencedByGuard(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	pid := nc.agents[0].cmd.Process.Pid
	stopped := time.Now()
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	nc.agentFaultFailover(h, vip, stopped)
	testkit.Eventually(t, 15*time.Second, "the guard killing the hung agent", func() bool {
		select {
		case <-nc.agents[0].exited:
			return true
		default:
			return false
		}
	})
	if wait := 10*time.Second - time.Since(stopped); wait > 0 {
		time.Sleep(wait) // the hang lasts 10 s; the guard acted long before
	}
	_ = syscall.Kill(pid, syscall.SIGCONT) // no effect: it is gone
	nc.restartAgent(0)
	if got := nc.top.listeners(vip, 7000); !slices.Equal(got, []int{1}) {
		t.Errorf("service running on %v after the hung agent's node came back, want only node2", got)
	}
	inv.check(t)
}

// TestAgentCrashLoopFencedByGuard protects "never two copies" when the
// agent crashes at every start (here: an unreadable state file, as after
// a disk fault): no process ever renews the lease, the guard started by
// the last good agent fences, and the crash loop changes nothing.
func TestAgentCrashLoopFencedByGuard(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	a := nc.agents[0]
	crashed := time.Now()
	a.kill()
	if err := os.WriteFile(filepath.Join(a.dir, "memory.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 5; k++ { // systemd's Restart=always
		nc.sameMachine(0)
		a.start(nc.servers(), "")
		<-a.exited
	}
	if !strings.Contains(a.out.String(), "memory.json") {
		t.Fatalf("the agent did not crash on its state file:\n%s", a.out.String())
	}
	nc.agentFaultFailover(h, vip, crashed)
	inv.check(t)
}

// probe dials the VIP every 10 ms until stopped and counts the answers
// that did not come from node want (none, or another node's).
type probe struct {
	stop, done chan struct{}
	ok, failed int
	failures   []string // when and what, for the log
}

func startProbe(nc *nsCluster, vip string, want int) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			if g := greeting(vip, 7000); g == "hello from "+nc.top.nodes[want].ns {
				p.ok++
			} else {
				p.failed++
				p.failures = append(p.failures, fmt.Sprintf("%s %q", time.Now().Format("15:04:05.000"), g))
			}
			time.Sleep(10 * time.Millisecond) // the probe's pace
		}
	}()
	return p
}

func (p *probe) end() (ok, failed int) {
	close(p.stop)
	<-p.done
	return p.ok, p.failed
}

// restartInPlace stops node 1's agent with SIGTERM (systemctl restart),
// starts it again (with bin, when set: an upgrade) and checks that nothing
// moved, the epoch is unchanged and no client request failed.
func restartInPlace(t *testing.T, profile, bin string) {
	nc, h, vip, inv := newPlacedCluster(t, 3, profile, 1, nil)
	before := nc.placement(h)
	p := startProbe(nc, vip, 0)
	a := nc.agents[0]
	_ = syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM)
	<-a.exited
	if len(a.logLines("event", "restart_hold")) == 0 || !strings.Contains(a.out.String(), "restart hold granted") {
		t.Fatalf("the stopping agent did not get a restart hold:\n%s", a.out.String())
	}
	a.bin = bin
	nc.sameMachine(0)
	a.start(nc.servers(), "")
	testkit.Eventually(t, 30*time.Second, "the new agent process renewing the lease", func() bool {
		return len(a.logLines("event", "guard_connected")) >= 2 && nc.nodeState(0) == "up"
	})
	time.Sleep(3 * time.Second) // keep probing: nothing may move after the restart either
	ok, failed := p.end()
	t.Logf("%s: %d client requests during the restart, %d failed", profile, ok+failed, failed)
	if failed > 0 {
		t.Errorf("%d of %d client requests failed during an agent restart: %v", failed, ok+failed, p.failures)
	}
	if after := nc.placement(h); after.NodeID != before.NodeID || after.Epoch != before.Epoch || after.State != "in_service" {
		t.Errorf("the restart moved the hierarchy: before %+v, after %+v", before, after)
	}
	if n := len(nc.guardLines(0, "event", "guard_fenced")); n > 0 {
		t.Errorf("the guard fenced during a restart")
	}
	inv.check(t)
}

// TestAgentRestartKeepsServices protects "no outage, no second copy" for
// `systemctl restart backstop-agent`: the stopping agent asks for a restart
// hold, the guard keeps the same deadline, the new process adopts the
// running hierarchy; not one client request fails and nothing moves. On
// the lan profile only: on fast (250 ms lease) a test machine as loaded as
// CI's, three nodes and the control plane on two cores, lets the new
// process's first leases lapse and its guard fence it (an outage, never a
// second copy); the fast profile is measured where the load is explicit,
// by failbench.
func TestAgentRestartKeepsServices(t *testing.T) {
	restartInPlace(t, "lan", "")
}

// TestAgentUpgradeKeepsServices: the same with the binary replaced (a new
// file at another path, as a package upgrade installs it) between the
// stop and the start.
func TestAgentUpgradeKeepsServices(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "backstop-agent.new")
	b, err := os.ReadFile(env.agent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	restartInPlace(t, "lan", bin)
}

// TestAgentStopFailsOverAfterTheHold protects "never two copies" for a stop
// that is not followed by a start (systemctl stop, a failed upgrade): once
// the hold ends, the guard fences the node and only then does the control
// plane fail it over.
func TestAgentStopFailsOverAfterTheHold(t *testing.T) {
	nc, h, vip, inv := newPlacedCluster(t, 3, "lan", 1, nil)
	a := nc.agents[0]
	// Restart with a short hold, so that the test does not wait 15 s.
	a.args = []string{"--restart-hold", "2s"}
	_ = syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM)
	<-a.exited
	nc.sameMachine(0)
	a.start(nc.servers(), "")
	nc.waitNodeState(0, "up", 30*time.Second)
	testkit.Eventually(t, 0, "the restarted agent connected to its guard", func() bool {
		return len(a.logLines("event", "guard_connected")) >= 2
	})
	stopped := time.Now()
	_ = syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM)
	<-a.exited
	time.Sleep(time.Second) // within the hold: nothing moves
	if p := nc.placement(h); p.NodeID != nc.nodes[0] || p.State != "in_service" {
		t.Fatalf("the hierarchy moved within the restart hold: %+v", p)
	}
	nc.agentFaultFailover(h, vip, stopped)
	nc.hasEvents("node.restarting", "node.down", "failover.started", "failover.completed")
	inv.check(t)
}
