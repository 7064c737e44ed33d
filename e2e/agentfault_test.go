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
	eventually(t, 10*time.Second, "the VIP answering from node2", func() bool { return greeting(vip, 7000) == "hello from "+nc.top.nodes[1].ns })
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

// restartAgent starts node i's agent again (what systemd's Restart=always
// does) and waits for the node to be up with nothing running twice.
func (nc *nsCluster) restartAgent(i int) {
	nc.agents[i].kill() // reap it if it is still there (stopped, killed by the guard)
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
			eventually(t, 10*time.Second, "the guard's fencing reported by the restarted agent", func() bool {
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
	eventually(t, 15*time.Second, "the guard killing the hung agent", func() bool {
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
		a.start(nc.servers(), "")
		<-a.exited
	}
	if !strings.Contains(a.out.String(), "memory.json") {
		t.Fatalf("the agent did not crash on its state file:\n%s", a.out.String())
	}
	nc.agentFaultFailover(h, vip, crashed)
	inv.check(t)
}
