package nodeagent

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

// TestFencedHierarchyIsNeverRestartedByLocalRecovery proves the invariant
// "never two copies: a fenced hierarchy is never restarted by local
// recovery".
//
// It forces the interleaving of the race in recoverResource: a monitor
// sees the service fail; local recovery checks the hierarchy, releases
// h.mu for the dependency checks; right there (the hook) the node fences
// itself and its next heartbeat is acknowledged, renewing the lease; then
// recovery asks for authority, which heartbeat.go grants without a
// placement check to a hierarchy this process brought in service on a
// command. Recovery must not start anything: the kit sees fence and
// nothing after, the service stays down, and the hierarchy stays out of
// service and inactive (so that the next fencing round has nothing left
// to fence, truthfully). Without the fix the calls are fence svc, fence
// vip, stop svc, start svc and the service runs on a fenced node.
func TestFencedHierarchyIsNeverRestartedByLocalRecovery(t *testing.T) {
	for _, tc := range []struct {
		name string
		// authority returns the runner's authority; renew renews the
		// lease as an acknowledged heartbeat does (nil: nothing to renew).
		authority func() (auth func(string, int64, bool) (bool, string), renew func())
	}{
		{"heartbeat authority, lease renewed", func() (func(string, int64, bool) (bool, string), func()) {
			a := &Agent{lease: newLease(nil)}
			renew := func() { a.lease.renew(time.Now(), time.Hour) }
			renew()
			return a.authority, renew
		}},
		{"authority that always grants", func() (func(string, int64, bool) (bool, string), func()) {
			return func(string, int64, bool) (bool, string) { return true, "" }, nil
		}},
		{"no authority", func() (func(string, int64, bool) (bool, string), func()) { return nil, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeKits()
				r := newTestRunner(t, t.TempDir(), f)
				auth, renew := tc.authority()
				r.authority = auth
				vip := withChecks(res("vip", "ip"), 10000, 20000, 3) // its own monitor stays quiet
				svc := withChecks(res("svc", "service", "vip"), 100, 1000, 3)
				if o := r.execute(command(envelope.BringInService, hid1, 1, vip, svc)); !o.OK {
					t.Fatalf("bring-up: %+v", o)
				}
				f.take()

				var hooked atomic.Int32
				r.hookBeforeAuthority = func(h *localHierarchy) {
					if hooked.Add(1) != 1 {
						return
					}
					// The node fences itself (lease expired, no majority)...
					if fr := r.fence("lease expired without a majority"); len(fr.Hierarchies) != 1 || len(fr.Failures) != 0 {
						t.Errorf("fence result %+v", fr)
					}
					// ...and then its next heartbeat is acknowledged.
					if renew != nil {
						renew()
					}
				}
				f.inst("svc").set(func(i *fakeInst) { i.running = false })
				time.Sleep(150 * time.Millisecond) // one quick check of svc fails
				synctest.Wait()

				if n := hooked.Load(); n != 1 {
					t.Fatalf("the interleaving was not reached: hook called %d times", n)
				}
				equalCalls(t, f.take(), []string{"fence svc", "fence vip"})
				if f.inst("svc").isRunning() || f.inst("vip").isRunning() {
					t.Fatal("a resource runs on a fenced node")
				}
				assertFenced(t, r)

				// Nothing later either: no monitor, no restart, nothing left
				// active for the next fencing round.
				f.mu.Lock()
				f.calls = nil
				f.mu.Unlock()
				time.Sleep(2 * time.Second)
				synctest.Wait()
				f.mu.Lock()
				later := f.calls
				f.mu.Unlock()
				if len(later) != 0 {
					t.Fatalf("calls after fencing: %q", later)
				}
				assertFenced(t, r)
				if ids := r.activeIDs(); len(ids) != 0 {
					t.Fatalf("active after fencing: %v", ids)
				}
			})
		})
	}
}

func assertFenced(t *testing.T, r *runner) {
	t.Helper()
	st := stateOf(r, hid1)
	if st.State != stateOutOfService || st.Active || !strings.HasPrefix(st.Detail, "fenced: ") {
		t.Fatalf("state after fencing %+v", st)
	}
}

// stubbornInst is a fake instance whose Start ignores its context and
// finishes only when release is closed, as a kit's start that is already
// past the point of no return.
type stubbornInst struct {
	*fakeInst
	entered chan struct{}
	release chan struct{}
}

func (s *stubbornInst) Start(ctx context.Context) error {
	s.f.record("start " + s.name)
	close(s.entered)
	<-s.release
	s.set(func(i *fakeInst) { i.running = true })
	return nil
}

// TestStartFinishingAfterFencingIsFencedAgain: fencing does not wait for
// kit calls, so a Start already running when the node fences itself may
// finish after the Fence of its resource. The bracket notices (the gate,
// asked again after the step) and fences that resource again (the
// bring-up itself saw its last start succeed: no rollback stops it), and
// the hierarchy stays fenced.
func TestStartFinishingAfterFencingIsFencedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKits()
		r := newTestRunner(t, t.TempDir(), f)
		stub := &stubbornInst{entered: make(chan struct{}), release: make(chan struct{})}
		r.newInstance = func(rs backstop.Resource, env kit.Env) (kit.Instance, error) {
			in, err := f.New(rs, env)
			if err != nil || rs.Name != "svc" {
				return in, err
			}
			stub.fakeInst = in.(*fakeInst)
			return stub, nil
		}
		done := make(chan outcome)
		go func() {
			done <- r.execute(command(envelope.BringInService, hid1, 1, res("vip", "ip"), res("svc", "service", "vip")))
		}()
		<-stub.entered
		if fr := r.fence("lease expired without a majority"); len(fr.Failures) != 0 {
			t.Fatalf("fence result %+v", fr)
		}
		close(stub.release)
		o := <-done
		if o.OK || !strings.Contains(o.Detail, fencedDetail) || o.Reason != backstop.FailedFenced {
			t.Fatalf("bring-up outcome %+v", o)
		}
		equalCalls(t, f.take(), []string{"start vip", "start svc", "fence svc", "fence vip", "fence svc"})
		if f.inst("svc").isRunning() || f.inst("vip").isRunning() {
			t.Fatal("a resource runs on a fenced node")
		}
		assertFenced(t, r)
	})
}

// TestLocalRecoveryRefusedAtAStaleGeneration: the bracket refuses an
// operation decided at a generation a preemption has since replaced,
// whatever the state looks like now, and runs none of its kit actions.
func TestLocalRecoveryRefusedAtAStaleGeneration(t *testing.T) {
	r := newRunner(t.TempDir(), newFakeKits().New, testLogger(t), newMetrics(), func() backstop.Timing { return defaultTiming }, time.Minute)
	h := r.get(hid1)
	h.mu.Lock()
	h.st.State, h.st.Active, h.st.Epoch = stateInService, true, 3
	seen := h.gen
	r.preemptLocked(h, true)
	h.st.State, h.st.Active = stateInService, true // as if something brought it back
	h.mu.Unlock()
	ran := false
	o, err := r.operate(h, opSpec{name: "local recovery", from: []placement{stateInService}, needActive: true,
		gen: seen, hasGen: true, epoch: 3,
		run: func(context.Context, *executor, []*unit) outcome { ran = true; return outcome{OK: true} }})
	if err == nil || o.OK || ran || !strings.Contains(o.Detail, "fenced or relinquished") {
		t.Fatalf("stale generation: ran %v, outcome %+v, err %v", ran, o, err)
	}
	for _, tc := range []struct {
		name   string
		p      opSpec
		detail string
	}{
		{"wrong state", opSpec{name: "restart_resource", from: []placement{stateInService}}, "needs the hierarchy in service on this node; it is out of service"},
		{"inactive", opSpec{name: "local recovery", needActive: true}, "needs the hierarchy active"},
		{"other epoch", opSpec{name: "local recovery", epoch: 2}, "decided at epoch 2"},
		{"ended context", opSpec{name: "local recovery", ctx: cancelled()}, "ended before it began"},
		{"invalid transition", opSpec{name: "x", enter: stateInService}, "out_of_service → in_service"},
	} {
		h := newHierarchy(hid2)
		h.st.Epoch = 1
		tc.p.run = func(context.Context, *executor, []*unit) outcome { ran = true; return outcome{OK: true} }
		o, err := r.operate(h, tc.p)
		if err == nil || ran || !strings.Contains(o.Detail, tc.detail) {
			t.Errorf("%s: ran %v, outcome %+v, err %v", tc.name, ran, o, err)
		}
		if h.st.State != stateOutOfService {
			t.Errorf("%s: a refused operation changed the state to %s", tc.name, h.st.State)
		}
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestPlacementStatesAreTheContracts: the agent's states are the
// contract's placement states, as reported in heartbeats.
func TestPlacementStatesAreTheContracts(t *testing.T) {
	for p, want := range map[placement]backstop.PlacementState{
		stateOutOfService: backstop.PlacementOutOfService, stateStarting: backstop.PlacementStarting,
		stateInService: backstop.PlacementInService, stateStopping: backstop.PlacementStopping, stateFailed: backstop.PlacementFailed,
	} {
		if backstop.PlacementState(p) != want || !p.valid() {
			t.Errorf("%q: want %q, valid", p, want)
		}
	}
	if placement("running").valid() {
		t.Error("an unknown state is valid")
	}
}

// TestTransitions spells out the state machine independently of its
// table: every pair of states, allowed or not.
func TestTransitions(t *testing.T) {
	const (
		oos = stateOutOfService
		sta = stateStarting
		ins = stateInService
		sto = stateStopping
		fai = stateFailed
	)
	allowed := map[[2]placement]bool{
		{oos, sta}: true, {oos, sto}: true, {oos, fai}: true,
		{sta, ins}: true, {sta, fai}: true, {sta, oos}: true, {sta, sto}: true,
		{ins, sta}: true, {ins, sto}: true, {ins, fai}: true, {ins, oos}: true,
		{sto, oos}: true, {sto, fai}: true, {sto, sto}: true, {sto, sta}: true,
		{fai, sta}: true, {fai, sto}: true, {fai, oos}: true, {fai, fai}: true,
	}
	all := []placement{oos, sta, ins, sto, fai}
	for _, from := range all {
		for _, to := range all {
			want := allowed[[2]placement{from, to}]
			t.Run(string(from)+"→"+string(to), func(t *testing.T) {
				if err := canTransition(from, to); (err == nil) != want {
					t.Fatalf("canTransition: %v, want allowed %v", err, want)
				}
				r := newRunner(t.TempDir(), nil, testLogger(t), newMetrics(), func() backstop.Timing { return defaultTiming }, time.Minute)
				h := newHierarchy(hid1)
				h.st.State, h.st.Detail, h.cmdEpoch = from, "before", 4
				err := r.transitionLocked(h, to, "after")
				switch {
				case want && (err != nil || h.st.State != to || h.st.Detail != "after"):
					t.Fatalf("allowed transition: err %v, state %s %q", err, h.st.State, h.st.Detail)
				case !want && (err == nil || h.st.State != from || h.st.Detail != "before"):
					t.Fatalf("invalid transition: err %v, state %s %q", err, h.st.State, h.st.Detail)
				}
				// Only staying in service keeps the command's authority;
				// a refused transition changes nothing.
				if wantCmd := int64(0); !want || to == ins {
					wantCmd = 4
					if h.cmdEpoch != wantCmd {
						t.Fatalf("cmdEpoch %d, want %d", h.cmdEpoch, wantCmd)
					}
				} else if h.cmdEpoch != wantCmd {
					t.Fatalf("cmdEpoch %d after leaving for %s, want 0", h.cmdEpoch, to)
				}
			})
		}
	}
	for _, bad := range []placement{"", "running"} {
		if canTransition(bad, oos) == nil || canTransition(oos, bad) == nil {
			t.Errorf("transition with unknown state %q allowed", bad)
		}
	}
	// The only way into service is a bring-up.
	for _, from := range all {
		if from != sta && canTransition(from, ins) == nil {
			t.Errorf("%s → in_service allowed", from)
		}
	}
}

// TestLoadRefusesUnknownStates: an unknown state in hierarchies.json is
// loaded failed and active, so that fencing covers whatever may run.
func TestLoadRefusesUnknownStates(t *testing.T) {
	dir := t.TempDir()
	if err := saveJSON(dir+"/"+fileHierarchies, []hierarchyRecord{{ID: hid1, State: "running", Epoch: 2}}); err != nil {
		t.Fatal(err)
	}
	r := newRunner(dir, nil, testLogger(t), newMetrics(), func() backstop.Timing { return defaultTiming }, time.Minute)
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(r, hid1); st.State != stateFailed || !st.Active || !strings.Contains(st.Detail, "unknown state") {
		t.Fatalf("state %+v", st)
	}
}
