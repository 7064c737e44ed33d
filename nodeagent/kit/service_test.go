package kit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
)

func serviceResource(params map[string]any) backstop.Resource {
	return backstop.Resource{Name: "svc", Kind: backstop.KindService, Params: params}
}

// newService returns a service instance with a fresh state directory,
// whose processes cleanup kills: the launcher's group, and the pid in
// pidFile if given.
func newTestService(t *testing.T, params map[string]any) (Instance, string) {
	t.Helper()
	dir := t.TempDir()
	inst, err := New(serviceResource(params), Env{StateDir: dir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killRecorded(dir, params) })
	return inst, dir
}

// killRecorded SIGKILLs what a service state directory and pid file name.
func killRecorded(stateDir string, params map[string]any) {
	if b, err := os.ReadFile(filepath.Join(stateDir, serviceStateFile)); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if pid, err := strconv.Atoi(f[0]); err == nil && pid > 1 {
				unix.Kill(-pid, unix.SIGKILL)
			}
		}
	}
	if pf, ok := params["pid_file"].(string); ok {
		if b, err := os.ReadFile(pf); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
}

// recordedPID is the launcher's pid from the state directory.
func recordedPID(t *testing.T, stateDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, serviceStateFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestServiceStartCheckKillStop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	inst, dir := newTestService(t, map[string]any{"start": "exec sleep 300"})
	if err := inst.Check(ctx, false); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("check before start = %v, want ErrNotRunning", err)
	}
	began := time.Now()
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("service Start: %v", time.Since(began).Round(time.Microsecond))
	if err := inst.Start(ctx); err != nil {
		t.Fatalf("second start: %v", err)
	}
	if err := inst.Check(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := inst.Check(ctx, true); err != nil {
		t.Fatal(err)
	}
	pid := recordedPID(t, dir)
	if pgid, _ := unix.Getpgid(pid); pgid != pid {
		t.Errorf("service pgid %d, want its own group %d", pgid, pid)
	}
	unix.Kill(pid, unix.SIGKILL)
	testkit.Eventually(t, 0, "the check failing after kill -9", func() bool { return inst.Check(ctx, false) != nil })
	err := inst.Check(ctx, false)
	if errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("check after kill -9 = %v, want a failure (not ErrNotRunning) saying it exited", err)
	}
	// Start again after the crash, then stop.
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if recordedPID(t, dir) == pid {
		t.Fatal("restart recorded the old pid")
	}
	began = time.Now()
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("service Stop (SIGTERM honoured): %v", time.Since(began).Round(time.Microsecond))
	if err := inst.Check(ctx, false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("check after stop = %v, want ErrNotRunning", err)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Errorf("stop when stopped: %v", err)
	}
}

func TestServiceStopKillsTermIgnoringGroup(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// The shell and its child both ignore SIGTERM.
	inst, dir := newTestService(t, map[string]any{"start": `trap "" TERM; sleep 300 & sleep 300; wait`, "stop_timeout_ms": 300.0})
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := recordedPID(t, dir)
	if err := testkit.Poll(ctx, 0, "3 members in the group", func() (bool, error) { return len(groupMembers(pid)) == 3, nil }); err != nil {
		t.Fatalf("group %d has members %v, want 3", pid, groupMembers(pid))
	}
	began := time.Now()
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	t.Logf("service Stop of a TERM-ignoring process group (stop_timeout_ms 300): %v", took.Round(time.Millisecond))
	if took < 300*time.Millisecond || took > 4*time.Second {
		t.Errorf("stop took %v, want about stop_timeout_ms (300 ms) plus the kill", took)
	}
	if m := groupMembers(pid); len(m) != 0 {
		t.Errorf("processes of the group left after stop: %v", m)
	}
}

func TestServicePidFile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pidFile := filepath.Join(t.TempDir(), "daemon.pid")
	// A daemonizing start: the launcher exits, its child writes the pid
	// file a little later, as daemons do.
	params := map[string]any{
		"start":    `sleep 300 & p=$!; (sleep 0.1; echo $p > ` + pidFile + `) &`,
		"stop":     `kill $(cat ` + pidFile + `)`,
		"pid_file": pidFile,
	}
	inst, _ := newTestService(t, params)
	began := time.Now()
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d < 100*time.Millisecond {
		t.Errorf("start returned after %v, before the pid file appeared", d)
	}
	if err := inst.Check(ctx, false); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	unix.Kill(pid, unix.SIGKILL)
	testkit.Eventually(t, 0, "the check failing after kill -9", func() bool { return inst.Check(ctx, false) != nil })
	if err := inst.Check(ctx, false); errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "from pid file") {
		t.Errorf("check after kill -9 = %v", err)
	}
	if err := inst.Start(ctx); err != nil { // stale pid file: starts again
		t.Fatal(err)
	}
	b, _ = os.ReadFile(pidFile)
	if pid2, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid2 == pid || !alive(pid2, 0) {
		t.Fatalf("restart: pid file names %d (old %d)", pid2, pid)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.Check(ctx, false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("check after stop = %v, want ErrNotRunning (stale pid file removed)", err)
	}

	// A pid file that never appears.
	inst2, _ := newTestService(t, map[string]any{"start": "true", "pid_file": pidFile + ".never"})
	began = time.Now()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond) // Start waits up to 5 s, or the caller's deadline
	defer cancel()
	err := inst2.Start(short)
	if err == nil || !strings.Contains(err.Error(), "names no live process") {
		t.Errorf("start without pid file = %v", err)
	}
	t.Logf("start giving up on a missing pid file: %v", time.Since(began).Round(time.Millisecond))
}

func TestServiceStartFailures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	inst, _ := newTestService(t, map[string]any{"start": "no-such-command-here --x"})
	inst.(*serviceKit).grace = 5 * time.Second // a loaded CI machine may take longer than the real 25 ms to fail
	if err := inst.Start(ctx); err == nil || !strings.Contains(err.Error(), "exited at once (exit status 127)") || !strings.Contains(err.Error(), "no-such-command-here: ") {
		t.Errorf("start of a missing command = %v, want it to say it exited at once, with the shell's complaint", err)
	}
	for _, p := range []map[string]any{
		{"stop": "x"},
		{"start": "x", "stop_timeout_ms": "soon"},
		{"start": "x", "pid_file": "rel.pid"},
	} {
		if _, err := New(serviceResource(p), Env{StateDir: t.TempDir()}); err == nil {
			t.Errorf("New(%v) accepted", p)
		}
	}
	if _, err := New(serviceResource(map[string]any{"start": "x"}), Env{}); err == nil {
		t.Error("New without a state directory accepted")
	}
}

func TestServiceFence(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	inst, dir := newTestService(t, map[string]any{"start": `trap "" TERM; sleep 300`})
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := recordedPID(t, dir)
	began := time.Now()
	if err := inst.Fence(); err != nil {
		t.Fatal(err)
	}
	t.Logf("service Fence: %v", time.Since(began).Round(time.Microsecond))
	if err := testkit.Poll(ctx, 0, "an empty group", func() (bool, error) { return len(groupMembers(pid)) == 0, nil }); err != nil {
		t.Errorf("processes left after fence: %v", groupMembers(pid))
	}
	if err := inst.Check(ctx, false); err == nil || errors.Is(err, ErrNotRunning) {
		t.Errorf("check after fence = %v, want a failure", err)
	}
}

// TestServiceSurvivesAgentRestart starts the service from a helper
// process that then exits, as an agent would, and manages it from here.
func TestServiceSurvivesAgentRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	params := map[string]any{"start": "exec sleep 300"}
	t.Cleanup(func() { killRecorded(dir, params) })
	res := helper(t, nil, helperSpec{Resource: serviceResource(params), StateDir: dir, Ops: []helperOp{{Op: "start"}, {Op: "check"}}})
	expect(t, res, "", "")
	inst, err := New(serviceResource(params), Env{StateDir: dir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Check(t.Context(), false); err != nil {
		t.Fatalf("after the starting agent exited: %v", err)
	}
	pid := recordedPID(t, dir)
	if err := inst.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if alive(pid, 0) {
		t.Errorf("process %d alive after stop", pid)
	}
}
