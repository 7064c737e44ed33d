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

	"github.com/backstop-ha/backstop"
)

func ocfResource(agent string, params map[string]any) backstop.Resource {
	return backstop.Resource{Name: "r1", Kind: backstop.KindOCF, Params: map[string]any{"agent": agent, "params": params}}
}

func TestOCFDummy(t *testing.T) {
	needFile(t, "/usr/lib/ocf/resource.d/heartbeat/Dummy", "resource-agents")
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	inst, err := New(ocfResource("heartbeat:Dummy", map[string]any{"state": filepath.Join(dir, "d1.state")}), Env{StateDir: dir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = inst.Check(ctx, false)
	var oe *OCFError
	if !errors.Is(err, ErrNotRunning) || !errors.As(err, &oe) || oe.Code != 7 {
		t.Fatalf("monitor before start = %v, want OCF_NOT_RUNNING", err)
	}
	began := time.Now()
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("ocf Dummy Start (start + monitor): %v", time.Since(began).Round(time.Millisecond))
	began = time.Now()
	if err := inst.Check(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("ocf Dummy monitor: %v", time.Since(began).Round(time.Millisecond))
	if err := inst.Check(ctx, true); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("ocf Dummy Stop: %v", time.Since(began).Round(time.Millisecond))
	if err := inst.Check(ctx, false); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("monitor after stop = %v, want ErrNotRunning", err)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("stop when stopped: %v", err)
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := inst.Fence(); err != nil {
		t.Fatal(err)
	}
	t.Logf("ocf Dummy Fence (= stop): %v", time.Since(began).Round(time.Millisecond))
	if err := inst.Check(ctx, false); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("monitor after fence = %v, want ErrNotRunning", err)
	}
}

func TestOCFAgentNotInstalled(t *testing.T) {
	t.Parallel()
	inst, err := New(ocfResource("heartbeat:DoesNotExist", nil), Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = inst.Start(t.Context())
	var oe *OCFError
	if !errors.As(err, &oe) || oe.Code != 5 || !oe.Hard() {
		t.Fatalf("start = %v, want a hard OCF_ERR_INSTALLED", err)
	}
	want := `ocf heartbeat:DoesNotExist start of "r1": exit 5 (OCF_ERR_INSTALLED: not installed): no agent /usr/lib/ocf/resource.d/heartbeat/DoesNotExist`
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q, want it to start with %q", err, want)
	}
	for _, bad := range []map[string]any{
		{"agent": "Dummy"}, {"agent": "../x:y"}, {"agent": "a:b/c"},
		{"agent": "heartbeat:Dummy", "params": map[string]any{"bad-name": "x"}},
		{"agent": "heartbeat:Dummy", "params": map[string]any{"x": []any{}}},
	} {
		if _, err := New(backstop.Resource{Name: "r", Kind: backstop.KindOCF, Params: bad}, Env{}); err == nil {
			t.Errorf("New(%v) accepted", bad)
		}
	}
}

// fakeAgent is an OCF agent whose behaviour comes from its parameters:
// rc_<action> is the exit code, reason an ocf-exit-reason, sleep a delay,
// daemon a pid file for a background process left holding the agent's
// stdout and stderr, envfile a file to dump the environment to.
const fakeAgent = `#!/bin/sh
echo "fake: $1 called" >&2
[ -n "$OCF_RESKEY_envfile" ] && env > "$OCF_RESKEY_envfile"
[ -n "$OCF_RESKEY_reason" ] && echo "ocf-exit-reason:$OCF_RESKEY_reason" >&2
[ -n "$OCF_RESKEY_sleep" ] && sleep "$OCF_RESKEY_sleep"
if [ -n "$OCF_RESKEY_daemon" ] && [ "$1" = start ]; then sleep 30 & echo $! > "$OCF_RESKEY_daemon"; fi
eval "rc=\${OCF_RESKEY_rc_$1:-0}"
exit $rc
`

func fakeOCF(t *testing.T, params map[string]any) *ocfKit {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "resource.d", "test"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "resource.d", "test", "Fake"), []byte(fakeAgent), 0o755); err != nil {
		t.Fatal(err)
	}
	r := ocfResource("test:Fake", params)
	r.QuickCheck = &backstop.CheckSettings{IntervalMS: 500, TimeoutMS: 250}
	r.DeepCheck = &backstop.CheckSettings{IntervalMS: 5000, TimeoutMS: 2500}
	k, err := newOCFAt(r, Env{StateDir: t.TempDir(), Log: testLogger(t)}, root)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOCFExitCodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	names := map[int]string{1: "OCF_ERR_GENERIC", 2: "OCF_ERR_ARGS", 3: "OCF_ERR_UNIMPLEMENTED", 4: "OCF_ERR_PERM", 5: "OCF_ERR_INSTALLED", 6: "OCF_ERR_CONFIGURED"}
	for code := 1; code <= 6; code++ {
		k := fakeOCF(t, map[string]any{"rc_monitor": strconv.Itoa(code), "reason": "boom " + strconv.Itoa(code)})
		err := k.Check(ctx, false)
		var oe *OCFError
		if !errors.As(err, &oe) || oe.Code != code || oe.Hard() != (code != 1) || errors.Is(err, ErrNotRunning) {
			t.Errorf("monitor exit %d: %v", code, err)
			continue
		}
		want := `ocf test:Fake monitor of "r1": exit ` + strconv.Itoa(code) + " (" + names[code]
		if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), ": boom "+strconv.Itoa(code)) {
			t.Errorf("monitor exit %d: error %q, want %q... : boom %d", code, err, want, code)
		}
	}
	// Without an exit reason, the tail of stderr.
	k := fakeOCF(t, map[string]any{"rc_start": "1"})
	if err := k.Start(ctx); err == nil || !strings.Contains(err.Error(), "fake: start called") {
		t.Errorf("start exit 1 without reason: %v", err)
	}
	// Start 0 but not running afterwards.
	k = fakeOCF(t, map[string]any{"rc_monitor": "7"})
	if err := k.Start(ctx); err == nil || !strings.Contains(err.Error(), "start returned 0, but then") || !errors.Is(err, ErrNotRunning) {
		t.Errorf("start 0 then monitor 7: %v", err)
	}
	// Stop 7 is success; degraded is running.
	k = fakeOCF(t, map[string]any{"rc_stop": "7", "rc_monitor": "190"})
	if err := k.Stop(ctx); err != nil {
		t.Errorf("stop exit 7: %v", err)
	}
	if err := k.Check(ctx, false); err != nil {
		t.Errorf("monitor exit 190 (degraded): %v", err)
	}
	// An unknown code.
	k = fakeOCF(t, map[string]any{"rc_monitor": "42"})
	if err := k.Check(ctx, false); err == nil || !strings.Contains(err.Error(), "exit 42 (unknown exit code)") {
		t.Errorf("monitor exit 42: %v", err)
	}
}

func TestOCFEnvironment(t *testing.T) {
	t.Parallel()
	envFile := filepath.Join(t.TempDir(), "env")
	k := fakeOCF(t, map[string]any{"envfile": envFile, "foo": "bar baz"})
	read := func() map[string]string {
		b, err := os.ReadFile(envFile)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				m[k] = v
			}
		}
		return m
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := k.Check(ctx, false); err != nil {
		t.Fatal(err)
	}
	e := read()
	for name, want := range map[string]string{
		"OCF_ROOT": k.root, "OCF_RESOURCE_INSTANCE": "r1", "OCF_RESOURCE_TYPE": "Fake", "OCF_RESOURCE_PROVIDER": "test",
		"OCF_RESKEY_foo": "bar baz", "OCF_RESKEY_CRM_meta_interval": "500", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
	} {
		if e[name] != want {
			t.Errorf("%s=%q, want %q", name, e[name], want)
		}
	}
	if ms, err := strconv.Atoi(e["OCF_RESKEY_CRM_meta_timeout"]); err != nil || ms < 1000 || ms > 3000 {
		t.Errorf("OCF_RESKEY_CRM_meta_timeout=%q, want the context's remaining time, about 3000", e["OCF_RESKEY_CRM_meta_timeout"])
	}
	if _, ok := e["OCF_CHECK_LEVEL"]; ok {
		t.Error("quick check sets OCF_CHECK_LEVEL")
	}
	if _, ok := e[helperEnv]; ok {
		t.Error("the agent's environment leaks into the OCF agent's")
	}
	if err := k.Check(ctx, true); err != nil {
		t.Fatal(err)
	}
	if e := read(); e["OCF_CHECK_LEVEL"] != "20" || e["OCF_RESKEY_CRM_meta_interval"] != "5000" {
		t.Errorf("deep check: OCF_CHECK_LEVEL=%q interval=%q", e["OCF_CHECK_LEVEL"], e["OCF_RESKEY_CRM_meta_interval"])
	}
}

func TestOCFTimeoutsAndDaemons(t *testing.T) {
	t.Parallel()
	// A hanging monitor is killed, with its process group, at the deadline.
	k := fakeOCF(t, map[string]any{"sleep": "30"})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := k.Check(ctx, false)
	var oe *OCFError
	if !errors.As(err, &oe) || oe.Code != -1 || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("hanging monitor: %v", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("hanging monitor returned after %v", d)
	}
	// Fence gives stop one second.
	began = time.Now()
	if err := k.Fence(); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("fence with a hanging stop: %v", err)
	}
	if d := time.Since(began); d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("fence took %v, want about 1 s", d)
	}
	// A start that leaves a daemon holding its stdout and stderr (as
	// IPaddr2 leaves send_arp) returns when the agent exits.
	pidFile := filepath.Join(t.TempDir(), "daemon.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				syscallKill(pid)
			}
		}
	})
	k = fakeOCF(t, map[string]any{"daemon": pidFile})
	began = time.Now()
	if err := k.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("start waited %v for the daemon it left", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if !alive(pid, 0) {
		t.Error("the daemon left by start was killed")
	}
}

func TestOCFIPaddr2InNamespace(t *testing.T) {
	needRoot(t, "creates a network namespace")
	needBins(t, "ip")
	needFile(t, "/usr/lib/ocf/resource.d/heartbeat/IPaddr2", "resource-agents")
	t.Parallel()
	node, peer := newNetns(t), newNetns(t)
	run(t, "ip", "link", "add", "eth0", "netns", node, "type", "veth", "peer", "name", "p0", "netns", peer)
	run(t, "ip", "-n", node, "addr", "add", "198.18.2.1/24", "dev", "eth0")
	run(t, "ip", "-n", node, "link", "set", "eth0", "up")
	run(t, "ip", "-n", peer, "link", "set", "p0", "up")
	r := ocfResource("heartbeat:IPaddr2", map[string]any{"ip": "198.18.2.50", "cidr_netmask": "24", "nic": "eth0"})
	has := `ip -o -4 addr show dev eth0 | grep -q " 198.18.2.50/24 "`
	res := helper(t, inNetns(node), helperSpec{
		Resource: r, StateDir: t.TempDir(),
		Env: map[string]string{"HA_RSCTMP": t.TempDir()}, // this test's own, not /run/resource-agents
		Ops: []helperOp{
			{Op: "check"}, {Op: "start"}, {Op: "check"}, {Op: "deep"}, {Op: "sh", Arg: has},
			{Op: "stop"}, {Op: "check"}, {Op: "sh", Arg: "! " + has},
		},
	})
	expect(t, res, "notrunning", "", "", "", "", "", "notrunning", "")
	t.Logf("ocf IPaddr2: start+monitor %.0f ms, monitor %.0f ms, stop %.0f ms", res[1].MS, res[2].MS, res[5].MS)
}
