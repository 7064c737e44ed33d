package nodeagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

const (
	hid1 = "0195f7a4-3333-7000-8000-000000000001"
	hid2 = "0195f7a4-3333-7000-8000-000000000002"
)

// newTestRunner returns a started runner on fake kits; it is stopped when
// the test ends.
func newTestRunner(t *testing.T, dir string, f *fakeKits) *runner {
	t.Helper()
	r := newRunner(dir, f.New, testLogger(t), newMetrics(), func() backstop.Timing { return defaultTiming }, time.Minute)
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.start(ctx, ctx)
	t.Cleanup(func() {
		cancel()
		r.wait()
	})
	return r
}

func command(action envelope.Action, hid string, epoch int64, rs ...backstop.Resource) *envelope.Command {
	return &envelope.Command{ID: "c-" + string(action), HierarchyID: hid, Hierarchy: "mail", Epoch: epoch, Term: 1,
		Action: action, Resources: rs, ExpiresAt: time.Now().Add(time.Minute)}
}

func withChecks(r backstop.Resource, quickMS, deepMS, maxRestarts int) backstop.Resource {
	r.QuickCheck = &backstop.CheckSettings{IntervalMS: quickMS, TimeoutMS: quickMS / 2}
	r.DeepCheck = &backstop.CheckSettings{IntervalMS: deepMS, TimeoutMS: deepMS / 2}
	r.LocalRecovery = &backstop.LocalRecovery{MaxRestarts: maxRestarts, WindowS: 60}
	return r
}

func stateOf(r *runner, id string) hierarchyRecord {
	h := r.get(id)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

func healthOf(t *testing.T, r *runner, resource string) client.ResourceHealth {
	t.Helper()
	_, rh := r.reports(nil, func(string) int64 { return 0 })
	for _, h := range rh {
		if h.Resource == resource {
			return h
		}
	}
	t.Fatalf("no health reported for %s in %+v", resource, rh)
	return client.ResourceHealth{}
}

func TestLocalRecoveryRestartsThenFailsTheHierarchy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		vip := withChecks(res("vip", "ip"), 100, 1000, 2)
		svc := withChecks(res("svc", "service", "vip"), 100, 1000, 2)
		if o := r.execute(command(envelope.BringInService, hid1, 1, vip, svc)); !o.OK {
			t.Fatalf("bring-up: %+v", o)
		}
		f.take()
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		if got := healthOf(t, r, "svc"); got.Quick == nil || !got.Quick.Ok {
			t.Fatalf("quick check not run or failing: %+v", got)
		}

		kill := func() {
			f.inst("svc").set(func(i *fakeInst) { i.running = false })
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
		}
		for n := 1; n <= 2; n++ {
			kill()
			equalCalls(t, f.take(), []string{"stop svc", "start svc"})
			if st := stateOf(r, hid1); st.State != stateInService {
				t.Fatalf("after restart %d: state %s", n, st.State)
			}
			h := healthOf(t, r, "svc")
			if *h.Restarts != n || *h.CheckFailures != int64(n) || h.Quick.Ok {
				t.Fatalf("after restart %d: health %+v", n, h)
			}
			time.Sleep(100 * time.Millisecond) // a passing check
			synctest.Wait()
		}
		kill() // a third failure: the budget (2 in 60 s) is spent
		equalCalls(t, f.take(), []string{"stop svc", "stop vip"})
		st := stateOf(r, hid1)
		if st.State != stateFailed || st.Active || !strings.Contains(st.Detail, "local recovery exhausted") {
			t.Fatalf("state %+v", st)
		}
		time.Sleep(time.Second) // nobody monitors a failed hierarchy
		synctest.Wait()
		if calls := f.take(); len(calls) != 0 {
			t.Fatalf("calls after failing: %q", calls)
		}
		hr, _ := r.reports(nil, nil)
		if len(hr) != 1 || hr[0].State != client.PlacementStateFailed || hr[0].Detail == nil {
			t.Fatalf("hierarchy report %+v", hr)
		}
	})
}

func TestLocalRecoveryRestartsDependentsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		vol := withChecks(res("vol", "volume"), 100, 1000, 3)
		svc := withChecks(res("svc", "service", "vol"), 100, 1000, 3)
		if o := r.execute(command(envelope.BringInService, hid1, 1, vol, svc)); !o.OK {
			t.Fatalf("bring-up: %+v", o)
		}
		f.take()
		// Losing the volume takes the service with it: both checks fail
		// in the same round, but only one restart (of vol and its
		// dependent) must happen.
		f.inst("vol").set(func(i *fakeInst) { i.running = false })
		f.inst("svc").set(func(i *fakeInst) { i.running = false })
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		got := f.take()
		if got[0] != "stop svc" || got[1] != "stop vol" || got[2] != "start vol" || got[3] != "start svc" {
			t.Fatalf("calls %q", got)
		}
		if len(got) > 4 {
			// The service's own failed check may restart it once more only
			// if it began after the volume's restart; here both began
			// before it.
			t.Fatalf("restarted twice: %q", got)
		}
	})
}

func TestDeepCheckRunsAtItsInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		svc := withChecks(res("svc", "service"), 100, 500, 1)
		if o := r.execute(command(envelope.BringInService, hid1, 1, svc)); !o.OK {
			t.Fatal(o.Detail)
		}
		time.Sleep(1050 * time.Millisecond)
		synctest.Wait()
		if q, d := f.count("check svc quick"), f.count("check svc deep"); d != 2 || q < 7 {
			t.Fatalf("%d quick and %d deep checks in 1.05 s", q, d)
		}
		f.inst("svc").set(func(i *fakeInst) { i.checkErr = errors.New("EHLO refused") })
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if f.count("stop svc") != 1 {
			t.Fatal("a failed check did not restart")
		}
	})
}

func TestTakeOutOfServiceAndCommandsNeedingService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		rs := mailHierarchy()
		if o := r.execute(command(envelope.RestartResource, hid1, 1)); o.OK || !strings.Contains(o.Detail, "in service") {
			t.Fatalf("restart out of service: %+v", o)
		}
		if o := r.execute(command(envelope.BringInService, hid1, 2, rs...)); !o.OK {
			t.Fatal(o.Detail)
		}
		f.take()
		c := command(envelope.RestartResource, hid1, 2)
		c.Target = "vol"
		if o := r.execute(c); !o.OK {
			t.Fatal(o.Detail)
		}
		equalCalls(t, f.take(), []string{"stop postfix", "stop vol", "start vol", "start postfix"})
		c = command(envelope.MoveIP, hid1, 2)
		c.Target, c.Interface = "vip", "eth1"
		if o := r.execute(c); !o.OK {
			t.Fatal(o.Detail)
		}
		equalCalls(t, f.take(), []string{"move vip eth1"})
		// Take-down with no resources in the command uses the local ones.
		if o := r.execute(command(envelope.TakeOutOfService, hid1, 3)); !o.OK {
			t.Fatal(o.Detail)
		}
		equalCalls(t, f.take(), []string{"stop postfix", "stop vol", "stop vip"})
		st := stateOf(r, hid1)
		if st.State != stateOutOfService || st.Active || st.Epoch != 3 {
			t.Fatalf("state %+v", st)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if f.count("check vip quick") != 0 {
			// Checks before the take-down were forgotten by take(); any
			// now would mean an out-of-service hierarchy is monitored.
			t.Fatal("monitoring continued after take-down")
		}
	})
}

func TestFailedBringUpIsReportedFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		f.newErr["postfix"] = errors.New("bad params")
		o := r.execute(command(envelope.BringInService, hid1, 1, mailHierarchy()...))
		if o.OK {
			t.Fatal("succeeded")
		}
		st := stateOf(r, hid1)
		if st.State != stateFailed || st.Active || !strings.Contains(st.Detail, "postfix/start") {
			t.Fatalf("state %+v", st)
		}
	})
}

func TestFenceCancelsARunningBringUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		// One hierarchy in service, another one starting (blocked).
		if o := r.execute(command(envelope.BringInService, hid1, 1, res("vip", "ip"), res("svc", "service", "vip"))); !o.OK {
			t.Fatal(o.Detail)
		}
		started := make(chan struct{})
		_, _ = f.New(res("db", "service"), kitEnv())
		f.inst("db").set(func(i *fakeInst) { i.blockStart, i.started = true, started })
		done := make(chan outcome)
		go func() {
			done <- r.execute(command(envelope.BringInService, hid2, 1, res("dbvol", "volume"), res("db", "service", "dbvol")))
		}()
		<-started
		f.take()

		fr := r.fence("lease expired")
		o := <-done
		if o.OK || !strings.Contains(o.Detail, fencedDetail) || o.Reason != backstop.FailedFenced {
			t.Fatalf("bring-up outcome %+v", o)
		}
		if !slices.Equal(fr.Hierarchies, []string{hid1, hid2}) || len(fr.Failures) != 0 {
			t.Fatalf("fence result %+v", fr)
		}
		var fences []string
		for _, c := range f.take() {
			if strings.HasPrefix(c, "fence ") {
				fences = append(fences, c)
			}
		}
		// Reverse order within each hierarchy; hierarchies in parallel.
		i1, i2 := slices.Index(fences, "fence svc"), slices.Index(fences, "fence vip")
		j1, j2 := slices.Index(fences, "fence db"), slices.Index(fences, "fence dbvol")
		if len(fences) != 4 || i1 > i2 || j1 > j2 {
			t.Fatalf("fence calls %q", fences)
		}
		for _, id := range []string{hid1, hid2} {
			if st := stateOf(r, id); st.State != stateOutOfService || st.Active || !strings.HasPrefix(st.Detail, "fenced: ") {
				t.Fatalf("%s: state %+v", id, st)
			}
		}
		if ids := r.activeIDs(); len(ids) != 0 {
			t.Fatalf("still active: %v", ids)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := f.count("check vip quick"); n != 0 {
			t.Fatalf("%d checks after fencing", n)
		}
	})
}

func TestFenceFailureKeepsTheHierarchyActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		if o := r.execute(command(envelope.BringInService, hid1, 1, res("vip", "ip"))); !o.OK {
			t.Fatal(o.Detail)
		}
		f.inst("vip").set(func(i *fakeInst) { i.fenceErr = errors.New("netlink: permission denied") })
		fr := r.fence("test")
		if len(fr.Failures) != 1 {
			t.Fatalf("fence result %+v", fr)
		}
		if st := stateOf(r, hid1); st.State != stateFailed || !st.Active {
			t.Fatalf("state %+v", st)
		}
	})
}

func TestResumeAfterAgentRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		dir := t.TempDir()
		func() {
			r := newRunner(dir, f.New, testLogger(t), newMetrics(), func() backstop.Timing { return defaultTiming }, time.Minute)
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); r.wait() }()
			r.start(ctx, ctx)
			if o := r.execute(command(envelope.BringInService, hid1, 7, withChecks(res("vip", "ip"), 100, 1000, 3))); !o.OK {
				t.Fatal(o.Detail)
			}
		}()
		// A second hierarchy the previous process was starting when it
		// died.
		var list []hierarchyRecord
		if _, err := loadJSON(filepath.Join(dir, fileHierarchies), &list); err != nil {
			t.Fatal(err)
		}
		list = append(list, hierarchyRecord{ID: hid2, State: stateStarting, Epoch: 2, Active: true, Resources: []backstop.Resource{res("db", "service")}})
		if err := saveJSON(filepath.Join(dir, fileHierarchies), list); err != nil {
			t.Fatal(err)
		}
		f.take()

		r := newTestRunner(t, dir, f)
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		if f.count("check vip quick") == 0 {
			t.Fatal("in-service hierarchy not monitored after restart")
		}
		if f.count("check db quick") != 0 {
			t.Fatal("an interrupted hierarchy is monitored")
		}
		if calls := f.take(); len(calls) != 0 {
			t.Fatalf("resuming started or stopped something: %q", calls)
		}
		if st := stateOf(r, hid1); st.State != stateInService || st.Epoch != 7 {
			t.Fatalf("resumed %+v", st)
		}
		st := stateOf(r, hid2)
		if st.State != stateFailed || !st.Active || !strings.Contains(st.Detail, "restarted while") {
			t.Fatalf("interrupted %+v", st)
		}
		if ids := r.activeIDs(); !slices.Equal(ids, []string{hid1, hid2}) {
			t.Fatalf("active %v", ids)
		}
		fi, err := os.Stat(filepath.Join(dir, fileHierarchies))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("state file: %v %v", fi.Mode(), err)
		}
	})
}

func TestAllowRestart(t *testing.T) {
	lr := backstop.LocalRecovery{MaxRestarts: 2, WindowS: 10}
	t0 := time.Unix(1000, 0)
	var hist []time.Time
	var ok bool
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {time.Second, true}, {2 * time.Second, false}, {9 * time.Second, false},
		{10 * time.Second, true}, // the first restart left the window
		{10500 * time.Millisecond, false},
		{11 * time.Second, true},
	}
	for _, s := range steps {
		hist, ok = allowRestart(hist, t0.Add(s.at), lr)
		if ok != s.want {
			t.Fatalf("at %v: allowed %v, want %v (history %v)", s.at, ok, s.want, hist)
		}
	}
	if _, ok := allowRestart(nil, t0, backstop.LocalRecovery{MaxRestarts: 0, WindowS: 10}); ok {
		t.Fatal("max_restarts 0 allowed a restart")
	}
}

func TestCheckSettingsDefaults(t *testing.T) {
	q, d := checkSettings(res("x", "tcp"), defaultTiming)
	if q != (backstop.CheckSettings{IntervalMS: 500, TimeoutMS: 250}) || d != (backstop.CheckSettings{IntervalMS: 5000, TimeoutMS: 2500}) {
		t.Fatalf("defaults %+v %+v", q, d)
	}
	r := res("x", "tcp")
	r.QuickCheck = &backstop.CheckSettings{IntervalMS: 200, TimeoutMS: 900}
	q, _ = checkSettings(r, defaultTiming)
	if q.TimeoutMS != 100 {
		t.Fatalf("a timeout above the interval is not clamped: %+v", q)
	}
	if lr := localRecovery(r); lr != backstop.DefaultLocalRecovery {
		t.Fatalf("local recovery default %+v", lr)
	}
}

func TestLocalRecoveryRestartsTheFailingDependency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		vol := withChecks(res("vol", "volume"), 10000, 20000, 3) // its own monitor is slow
		svc := withChecks(res("svc", "service", "vol"), 100, 1000, 3)
		if o := r.execute(command(envelope.BringInService, hid1, 1, vol, svc)); !o.OK {
			t.Fatal(o.Detail)
		}
		f.take()
		f.inst("vol").set(func(i *fakeInst) { i.running = false })
		f.inst("svc").set(func(i *fakeInst) { i.running = false })
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		equalCalls(t, f.take(), []string{"stop svc", "stop vol", "start vol", "start svc"})
		if h := healthOf(t, r, "vol"); *h.Restarts != 1 || h.Quick == nil || h.Quick.Ok {
			t.Fatalf("vol health %+v", h)
		}
		if h := healthOf(t, r, "svc"); *h.Restarts != 0 {
			t.Fatalf("svc health %+v", h)
		}
	})
}
