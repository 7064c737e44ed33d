package kit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backstop-ha/backstop"
)

// Tests that need another network or mount namespace run kit code in a
// re-executed copy of the test binary: `ip netns exec NS kit.test` or
// `unshare -m kit.test`, with the environment variable helperEnv holding a
// helperSpec. The helper runs the operations on a fresh Instance, prints
// one helperResult per operation as JSON and exits; TestMain dispatches
// it before any test runs. A whole process in the namespace is what
// production has (the agent runs under ip netns exec), and nothing of the
// namespace can leak into the test process's threads.

const helperEnv = "BACKSTOP_KIT_TEST_HELPER"

type helperOp struct {
	Op  string `json:"op"`            // start stop check deep fence sh cd hold sleep
	Arg string `json:"arg,omitempty"` // sh: script; cd, hold: path; sleep: duration
}

type helperSpec struct {
	Resource backstop.Resource `json:"resource"`
	StateDir string            `json:"state_dir"`
	Env      map[string]string `json:"env"` // set in the helper's environment first
	Ops      []helperOp        `json:"ops"`
}

type helperResult struct {
	Op         string  `json:"op"`
	Err        string  `json:"err,omitempty"`
	NotRunning bool    `json:"not_running,omitempty"`
	Out        string  `json:"out,omitempty"`
	MS         float64 `json:"ms"`
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(runHelper(spec))
	}
	os.Exit(m.Run())
}

func runHelper(specJSON string) int {
	var spec helperSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "helper: bad spec:", err)
		return 2
	}
	for k, v := range spec.Env {
		os.Setenv(k, v)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	inst, err := New(spec.Resource, Env{StateDir: spec.StateDir, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: New:", err)
		return 2
	}
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	var results []helperResult
	for _, op := range spec.Ops {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		began := time.Now()
		var err error
		var out []byte
		switch op.Op {
		case "start":
			err = inst.Start(ctx)
		case "stop":
			err = inst.Stop(ctx)
		case "check":
			err = inst.Check(ctx, false)
		case "deep":
			err = inst.Check(ctx, true)
		case "fence":
			err = inst.Fence()
		case "sh":
			out, err = exec.CommandContext(ctx, "/bin/sh", "-c", op.Arg).CombinedOutput()
		case "cd":
			err = os.Chdir(op.Arg)
		case "hold":
			var f *os.File
			if f, err = os.Open(op.Arg); err == nil {
				held = append(held, f)
			}
		case "sleep":
			var d time.Duration
			if d, err = time.ParseDuration(op.Arg); err == nil {
				time.Sleep(d)
			}
		default:
			err = fmt.Errorf("unknown op %q", op.Op)
		}
		cancel()
		r := helperResult{Op: op.Op, MS: float64(time.Since(began).Microseconds()) / 1000, Out: string(out)}
		if err != nil {
			r.Err = err.Error()
			r.NotRunning = errors.Is(err, ErrNotRunning)
		}
		results = append(results, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		return 2
	}
	return 0
}

// helper runs spec's operations in a copy of the test binary started
// through wrapper (e.g. ip netns exec NS) and returns their results.
func helper(t *testing.T, wrapper []string, spec helperSpec) []helperResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	args := append(append([]string{}, wrapper...), self)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	// A race-enabled binary sleeps 1 s at exit (atexit_sleep_ms) unless
	// told otherwise: that would be most of each helper's run time.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b), "GORACE="+gorace)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if testing.Verbose() && stderr.Len() > 0 {
		t.Logf("helper log:\n%s", strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		t.Fatalf("helper %v: %v\nstderr: %s\nstdout: %s", wrapper, err, stderr.String(), stdout.String())
	}
	var res []helperResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res) != len(spec.Ops) {
		t.Fatalf("helper output: %v: %q (stderr: %s)", err, stdout.String(), stderr.String())
	}
	return res
}

// expect checks helper results against the wanted outcome per operation:
// "" success, "!" any error, "notrunning" ErrNotRunning, other text an
// error containing it.
func expect(t *testing.T, res []helperResult, want ...string) {
	t.Helper()
	for i, r := range res {
		w := want[i]
		switch {
		case w == "" && r.Err != "":
			t.Errorf("op %d %s: unexpected error: %s", i, r.Op, r.Err)
		case w == "!" && r.Err == "":
			t.Errorf("op %d %s: succeeded, want an error", i, r.Op)
		case w == "notrunning" && !r.NotRunning:
			t.Errorf("op %d %s: got %q, want ErrNotRunning", i, r.Op, r.Err)
		case w != "" && w != "!" && w != "notrunning" && !strings.Contains(r.Err, w):
			t.Errorf("op %d %s: got error %q, want one containing %q", i, r.Op, r.Err, w)
		}
	}
}

// testLogger logs to t's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// needRoot skips t when not run as root.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

// needBins skips t when a program is missing, or fails it under CI, which
// must install everything the tests need.
func needBins(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing (CI must install it; see the kit package's Debian packages): %v", n, err)
			}
			t.Skipf("%s is missing: %v", n, err)
		}
	}
}

// needFile is needBins for a file path (an OCF agent).
func needFile(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (CI must install Debian package %s): %v", path, pkg, err)
		}
		t.Skipf("%s is missing (install Debian package %s): %v", path, pkg, err)
	}
}

// run runs a command and fails t if it fails.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var nsSeq atomic.Int32

// newNetns creates a network namespace whose loopback is up; cleanup kills
// every process still in it and deletes it (its interfaces go with it).
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("bskit-%d-%d", os.Getpid(), nsSeq.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for f := range strings.FieldsSeq(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscallKill(pid)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func syscallKill(pid int) { unix.Kill(pid, unix.SIGKILL) }

// inNetns is the wrapper that runs the helper in a network namespace.
func inNetns(ns string) []string { return []string{"ip", "netns", "exec", ns} }
