package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentProc is one backstop-agent running in a node's namespaces.
type agentProc struct {
	t      *testing.T
	name   string
	ns     string
	dir    string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	// bin replaces env.agent when set (an upgraded binary); args are
	// extra flags.
	bin  string
	args []string
	// mntPID, when set, is a process whose mount namespace the next
	// start joins instead of making a new one: an agent restarted on a
	// running node sees the mounts its predecessor made, as on a real
	// machine (a reboot, by contrast, starts from a fresh namespace).
	mntPID int
	// binds are bind mounts (host source, target) made in the agent's new
	// private mount namespace before it starts: files of the node's own
	// at a path every node shares, as on separate machines (the mail
	// tests' Postfix configuration directory). A start that joins a
	// namespace (mntPID) finds them there already.
	binds [][2]string
}

// startAgent starts backstop-agent in node nd's network namespace and in a
// private mount namespace of its own (with binds mounted in it, if any),
// enrolling with token. It is killed (by PID) when t ends, and its log is
// shown if t failed.
func startAgent(t *testing.T, name string, nd *netNode, server, token string, binds ...[2]string) *agentProc {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{t: t, name: name, ns: nd.ns, dir: dir, out: &syncBuffer{}, binds: binds}
	a.start(server, token)
	return a
}

func (a *agentProc) start(server, token string) {
	t := a.t
	bin := env.agent
	if a.bin != "" {
		bin = a.bin
	}
	mnt := []string{"unshare", "--mount", "--propagation", "private", "--"}
	if len(a.binds) > 0 {
		// sh mounts the binds ("$1" on "$2", ...), then execs the agent.
		script := ""
		args := []string{}
		for i, b := range a.binds {
			script += fmt.Sprintf(`mount --bind "$%d" "$%d" && `, 2*i+1, 2*i+2)
			args = append(args, b[0], b[1])
		}
		script += fmt.Sprintf(`shift %d && exec "$@"`, 2*len(a.binds))
		mnt = append(mnt, append([]string{"sh", "-c", script, "sh"}, args...)...)
	}
	if a.mntPID > 0 {
		mnt = []string{"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", a.mntPID), "--"}
		a.mntPID = 0
	}
	args := append([]string{"netns", "exec", a.ns}, mnt...)
	args = append(args, bin, "--server", server, "--data-dir", a.dir, "--log-format", "json", "--metrics-listen", "off",
		// The fence guard outlives the agent: it must not hold the
		// agent's output pipe open (Wait would wait for it).
		"--guard-log", filepath.Join(a.dir, "guard.log"))
	if token != "" {
		args = append(args, "--enroll-token", token)
	}
	args = append(args, a.args...)
	cmd := exec.Command("ip", args...)
	cmd.Env = daemonEnv("")
	cmd.Stdout, cmd.Stderr = a.out, a.out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", a.name, err)
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	exited := a.exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		a.kill()
		// The fence guard outlives the agent and would go on writing in
		// the data directory (a fencing at the lease deadline) while the
		// test's temporary directory is removed: end every process of
		// the node now, as the topology's teardown would, only later.
		killNamespace(a.ns)
		if t.Failed() {
			t.Logf("agent %s (pid %d) log:\n%s", a.name, cmd.Process.Pid, a.out.String())
		}
	})
}

// kill SIGKILLs the agent process (by PID) and waits for it.
func (a *agentProc) kill() {
	select {
	case <-a.exited:
		return
	default:
	}
	_ = syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.exited
}

// logLines returns the agent's JSON log records that have key=value.
func (a *agentProc) logLines(key, value string) []map[string]any {
	var out []map[string]any
	s := bufio.NewScanner(strings.NewReader(a.out.String()))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var m map[string]any
		if json.Unmarshal(s.Bytes(), &m) != nil {
			continue
		}
		if fmt.Sprint(m[key]) == value {
			out = append(out, m)
		}
	}
	return out
}

// greeting connects to addr:port and returns the first line the service
// says ("hello from <namespace>"), or "" when nothing answers.
func greeting(addr string, port int) string {
	c, err := dialFromHost(addr, port, 500*time.Millisecond)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSpace(line)
}
