//go:build linux

package nodeagent

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/nodeagent/kit"
)

// guardFixture is a data directory with one active hierarchy whose
// service (a real process started by the real service kit) runs, and a
// fence guard serving the directory in this process.
type guardFixture struct {
	dir  string
	inst kit.Instance
	conn net.Conn
	dec  *json.Decoder
}

const guardTestHierarchy = "0195f7a4-2222-7000-8000-000000000001"

func newGuardFixture(t *testing.T) *guardFixture {
	t.Helper()
	dir := t.TempDir()
	res := backstop.Resource{Name: "svc", Kind: backstop.KindService, Params: map[string]any{"start": "exec sleep 300"}}
	stateDir := filepath.Join(dir, dirResources, guardTestHierarchy, res.Name)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	inst, err := kit.New(res, kit.Env{StateDir: stateDir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Fence() })
	st := []hierarchyRecord{{ID: guardTestHierarchy, Name: "mail", State: stateInService, Epoch: 3, Active: true,
		Resources: []backstop.Resource{res}, UpdatedAt: time.Now()}}
	if err := saveJSON(filepath.Join(dir, fileHierarchies), st); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunGuard(ctx, GuardConfig{DataDir: dir, Logger: testLogger(t), AckTimeout: 5 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	var c net.Conn
	testkit.Eventually(t, 0, "the guard's socket", func() bool {
		c, err = net.Dial("unix", filepath.Join(dir, fileGuardSock))
		return err == nil
	})
	t.Cleanup(func() { c.Close() })
	return &guardFixture{dir: dir, inst: inst, conn: c, dec: json.NewDecoder(c)}
}

func (f *guardFixture) send(t *testing.T, m guardMsg) {
	t.Helper()
	if err := json.NewEncoder(f.conn).Encode(m); err != nil {
		t.Fatal(err)
	}
}

func (f *guardFixture) running(t *testing.T) bool {
	return f.inst.Check(t.Context(), false) == nil
}

// TestGuardFencesWhenTheAgentGoesSilent protects "never two copies" when
// the agent dies: the guard, which outlives it, kills the hierarchy's
// service once the last deadline the agent granted has passed (never
// before), and records the fencing for the next agent process.
func TestGuardFencesWhenTheAgentGoesSilent(t *testing.T) {
	f := newGuardFixture(t)
	armedAt := time.Now()
	f.send(t, guardMsg{ArmNS: int64(boottime() + 300*time.Millisecond)})
	f.conn.Close() // the agent dies without a word
	testkit.Eventually(t, 30*time.Second, "the service to be fenced", func() bool { return !f.running(t) })
	var reports []struct {
		At          time.Time `json:"at"`
		Hierarchies []string  `json:"hierarchies"`
	}
	testkit.Eventually(t, 0, "the fence report", func() bool {
		ok, err := loadJSON(filepath.Join(f.dir, fileFences), &reports)
		return err == nil && ok && len(reports) > 0
	})
	if got := reports[0].Hierarchies; len(got) != 1 || got[0] != guardTestHierarchy {
		t.Fatalf("fence report names %v, want [%s]", got, guardTestHierarchy)
	}
	if early := armedAt.Add(300 * time.Millisecond).Sub(reports[0].At); early > 0 {
		t.Fatalf("fenced %s before the granted deadline", early)
	}
	var st []hierarchyRecord
	if _, err := loadJSON(filepath.Join(f.dir, fileHierarchies), &st); err != nil || len(st) != 1 {
		t.Fatalf("hierarchies.json: %v %v", st, err)
	}
	if st[0].Active || st[0].State != stateOutOfService {
		t.Fatalf("after fencing the hierarchy is recorded %s active=%v, want out_of_service inactive", st[0].State, st[0].Active)
	}
}

// TestGuardTellsALiveAgent protects the agent's view of its node: a live
// agent whose deadline passed (it was late, or isolated) is told of the
// fencing and acknowledges; the guard then leaves the report to it and
// does not kill it.
func TestGuardTellsALiveAgent(t *testing.T) {
	f := newGuardFixture(t)
	f.send(t, guardMsg{ArmNS: int64(boottime() + 100*time.Millisecond)})
	var m guardMsg
	if err := f.dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m.Fenced == 0 || len(m.Hierarchies) != 1 || m.Hierarchies[0] != guardTestHierarchy {
		t.Fatalf("notice %+v, want a fencing of %s", m, guardTestHierarchy)
	}
	// Fence sends SIGKILL and does not wait for the process to be reaped.
	testkit.Eventually(t, 0, "the service to be gone", func() bool { return !f.running(t) })
	f.send(t, guardMsg{AckFence: m.Fenced})
	// Re-arming works after a fencing; with nothing active the next
	// expiry fences nothing and sends no notice.
	f.send(t, guardMsg{ArmNS: int64(boottime() + 50*time.Millisecond)})
	_ = f.conn.SetReadDeadline(time.Now().Add(time.Second))
	if err := f.dec.Decode(&m); err == nil {
		t.Fatalf("second notice %+v with nothing active", m)
	}
	if ok, _ := loadJSON(filepath.Join(f.dir, fileFences), new([]any)); ok {
		t.Fatal("the guard recorded a report although the live agent acknowledged (it reports itself)")
	}
}

// TestGuardFollowsTheNewestDeadline protects both directions of the
// guard's deadline: a newer grant postpones the fencing (no false fence
// of a node whose agent renews), and a newer, shorter grant brings it
// forward (a restart hold ends with the next ordinary lease, as on the
// control plane, so the guard never outlasts the server's deadline).
func TestGuardFollowsTheNewestDeadline(t *testing.T) {
	f := newGuardFixture(t)
	f.send(t, guardMsg{ArmNS: int64(boottime() + 2*time.Second)})
	f.send(t, guardMsg{ArmNS: int64(boottime() + time.Hour)})
	_ = f.conn.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
	var m guardMsg
	if err := f.dec.Decode(&m); err == nil {
		t.Fatalf("fenced (%+v) although the newest deadline is an hour away", m)
	}
	if !f.running(t) {
		t.Fatal("service fenced before the deadline")
	}
	f.conn.Close()
	f.conn = nil
	c, err := net.Dial("unix", filepath.Join(f.dir, fileGuardSock))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f.conn, f.dec = c, json.NewDecoder(c)
	f.send(t, guardMsg{ArmNS: int64(boottime() + 150*time.Millisecond)}) // the hold ended
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := f.dec.Decode(&m); err != nil || m.Fenced == 0 {
		t.Fatalf("no fencing after a shorter, newer deadline passed: %+v %v", m, err)
	}
}

// TestGuardWithholdsTheWatchdogWhenFencingFails protects the last resort
// of "never two copies" on real hardware: the guard feeds the watchdog
// while it runs, and stops feeding it (so that the kernel reboots the
// node) once a fencing left something unkilled; it never disarms it then.
// The "device" is a plain file: never a real watchdog on a test machine.
func TestGuardWithholdsTheWatchdogWhenFencingFails(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	guardTestHook = func(g *guard) {
		g.fence = func(string) fenceResult {
			return fenceResult{Hierarchies: []string{guardTestHierarchy}, Failures: []string{"svc: cannot kill"}}
		}
	}
	t.Cleanup(func() { guardTestHook = nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunGuard(ctx, GuardConfig{DataDir: dir, Logger: testLogger(t), AckTimeout: time.Second,
			Watchdog: dev, WatchdogKick: 10 * time.Millisecond})
	}()
	size := func() int64 {
		fi, err := os.Stat(dev)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	testkit.Eventually(t, 0, "keepalives", func() bool { return size() >= 3 })
	var c net.Conn
	testkit.Eventually(t, 0, "the guard's socket", func() bool {
		var err error
		c, err = net.Dial("unix", filepath.Join(dir, fileGuardSock))
		return err == nil
	})
	defer c.Close()
	if err := json.NewEncoder(c).Encode(guardMsg{ArmNS: int64(boottime() + 20*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	var m guardMsg
	if err := json.NewDecoder(c).Decode(&m); err != nil || len(m.Failures) == 0 {
		t.Fatalf("notice %+v %v, want a failed fencing", m, err)
	}
	// The flag is set before the notice is sent: at most one keepalive
	// that had already passed its check may still land.
	before := size()
	time.Sleep(300 * time.Millisecond) // 30 kick periods
	if after := size(); after > before+1 {
		t.Fatalf("the watchdog was fed %d more times after a failed fencing", after-before)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dev)
	if strings.Contains(string(b), "V") {
		t.Fatal("the guard disarmed the watchdog after a failed fencing")
	}
}
