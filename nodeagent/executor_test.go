package nodeagent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

func newTestExecutor(t *testing.T) *executor {
	return &executor{log: testLogger(t), stepTimeout: time.Minute}
}

// units makes units of fake instances for resources (in bring-up order).
func units(t *testing.T, f *fakeKits, rs ...backstop.Resource) []*unit {
	t.Helper()
	var us []*unit
	for _, r := range rs {
		in, err := f.New(r, kitEnv())
		us = append(us, &unit{res: r, inst: in, err: err})
	}
	return us
}

func stepsOf(o outcome) []string {
	var out []string
	for _, s := range o.Steps {
		mark := "ok"
		if !s.OK {
			mark = "FAIL"
		}
		out = append(out, s.Action+" "+s.Resource+" "+mark)
	}
	return out
}

func mailHierarchy() []backstop.Resource {
	return []backstop.Resource{res("vip", "ip"), res("vol", "volume"), res("postfix", "service", "vip", "vol")}
}

func TestBringUpStartsInOrder(t *testing.T) {
	f := newFakeKits()
	o := newTestExecutor(t).bringUp(t.Context(), units(t, f, mailHierarchy()...))
	if !o.OK || o.Detail != "" {
		t.Fatalf("outcome %+v", o)
	}
	equalCalls(t, f.take(), []string{"start vip", "start vol", "start postfix"})
	equalCalls(t, stepsOf(o), []string{"start vip ok", "start vol ok", "start postfix ok"})
}

func TestBringUpRollsBackInReverse(t *testing.T) {
	f := newFakeKits()
	us := units(t, f, mailHierarchy()...)
	f.inst("postfix").set(func(i *fakeInst) { i.startErr = errors.New("exit status 1") })
	o := newTestExecutor(t).bringUp(t.Context(), us)
	if o.OK || !o.Clean {
		t.Fatalf("outcome %+v, want failed and clean", o)
	}
	if o.Detail != "step postfix/start failed: exit status 1" {
		t.Errorf("detail %q", o.Detail)
	}
	equalCalls(t, stepsOf(o), []string{"start vip ok", "start vol ok", "start postfix FAIL",
		"rollback_stop postfix ok", "rollback_stop vol ok", "rollback_stop vip ok"})
	if f.inst("vip").isRunning() || f.inst("vol").isRunning() {
		t.Error("rollback left resources running")
	}
}

func TestBringUpRollbackStopFailureIsNotClean(t *testing.T) {
	f := newFakeKits()
	us := units(t, f, mailHierarchy()...)
	f.inst("postfix").set(func(i *fakeInst) { i.startErr = errors.New("boom") })
	f.inst("vol").set(func(i *fakeInst) { i.stopErr = errors.New("busy") })
	o := newTestExecutor(t).bringUp(t.Context(), us)
	if o.OK || o.Clean {
		t.Fatalf("outcome %+v, want failed and not clean", o)
	}
	equalCalls(t, stepsOf(o), []string{"start vip ok", "start vol ok", "start postfix FAIL",
		"rollback_stop postfix ok", "rollback_stop vol FAIL", "rollback_stop vip ok"})
}

func TestBringUpUnusableResourceFailsItsStep(t *testing.T) {
	f := newFakeKits()
	f.newErr["vol"] = errors.New(`resource "vol" (volume): parameter target: required`)
	o := newTestExecutor(t).bringUp(t.Context(), units(t, f, mailHierarchy()...))
	if o.OK {
		t.Fatal("bring-up succeeded")
	}
	equalCalls(t, stepsOf(o), []string{"start vip ok", "start vol FAIL", "rollback_stop vip ok"})
	if !strings.Contains(o.Detail, "parameter target: required") {
		t.Errorf("detail %q", o.Detail)
	}
}

func TestBringUpCancelledRollsBack(t *testing.T) {
	f := newFakeKits()
	us := units(t, f, mailHierarchy()...)
	started := make(chan struct{})
	f.inst("vol").set(func(i *fakeInst) { i.blockStart, i.started = true, started })
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; cancel() }()
	o := newTestExecutor(t).bringUp(ctx, us)
	if o.OK {
		t.Fatal("bring-up succeeded")
	}
	equalCalls(t, stepsOf(o), []string{"start vip ok", "start vol FAIL", "rollback_stop vol ok", "rollback_stop vip ok"})
	if f.count("start postfix") != 0 {
		t.Error("started a resource after cancellation")
	}
}

func TestTakeDownContinuesPastFailures(t *testing.T) {
	f := newFakeKits()
	us := units(t, f, mailHierarchy()...)
	f.inst("vol").set(func(i *fakeInst) { i.stopErr = errors.New("target is busy") })
	o := newTestExecutor(t).takeDown(t.Context(), us)
	if o.OK || o.Clean {
		t.Fatalf("outcome %+v", o)
	}
	equalCalls(t, stepsOf(o), []string{"stop postfix ok", "stop vol FAIL", "stop vip ok"})
	if o.Detail != "step vol/stop failed: target is busy" {
		t.Errorf("detail %q", o.Detail)
	}
	f.inst("vol").set(func(i *fakeInst) { i.stopErr = nil })
	if o := newTestExecutor(t).takeDown(t.Context(), us); !o.OK || !o.Clean {
		t.Fatalf("second take-down %+v", o)
	}
}

func TestDependents(t *testing.T) {
	rs := []backstop.Resource{res("vip", "ip"), res("vol", "volume"), res("db", "service", "vol"),
		res("mta", "service", "vip", "db"), res("probe", "smtp", "mta"), res("other", "tcp", "vip")}
	f := newFakeKits()
	us := units(t, f, rs...)
	names := func(idx []int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, us[i].res.Name)
		}
		return out
	}
	for target, want := range map[string][]string{
		"vol":   {"db", "mta", "probe"},
		"vip":   {"mta", "probe", "other"},
		"probe": nil,
		"db":    {"mta", "probe"},
	} {
		if got := names(dependents(us, target)); !slices.Equal(got, want) {
			t.Errorf("dependents(%s) = %q, want %q", target, got, want)
		}
	}
}

func TestRestartStopsAndStartsDependents(t *testing.T) {
	f := newFakeKits()
	rs := []backstop.Resource{res("vip", "ip"), res("vol", "volume"), res("postfix", "service", "vip", "vol"), res("smtp", "smtp", "postfix")}
	us := units(t, f, rs...)
	o := newTestExecutor(t).restart(t.Context(), us, "vol")
	if !o.OK {
		t.Fatalf("outcome %+v", o)
	}
	equalCalls(t, f.take(), []string{"stop smtp", "stop postfix", "stop vol", "start vol", "start postfix", "start smtp"})
	equalCalls(t, stepsOf(o), []string{"stop smtp ok", "stop postfix ok", "restart vol ok", "start postfix ok", "start smtp ok"})

	f.inst("vol").set(func(i *fakeInst) { i.startErr = errors.New("mount: wrong fs type") })
	o = newTestExecutor(t).restart(t.Context(), us, "vol")
	if o.OK || !strings.HasPrefix(o.Detail, "step vol/restart failed: start: mount: wrong fs type") {
		t.Fatalf("outcome %+v", o)
	}

	if o := newTestExecutor(t).restart(t.Context(), us, "nope"); o.OK {
		t.Fatal("restart of an unknown resource succeeded")
	}
}

func TestMoveIP(t *testing.T) {
	f := newFakeKits()
	us := units(t, f, mailHierarchy()...)
	e := newTestExecutor(t)
	if o := e.moveIP(t.Context(), us, "vip", "eth1"); !o.OK {
		t.Fatalf("move: %+v", o)
	}
	if f.inst("vip").iface != "eth1" {
		t.Error("address not moved")
	}
	if o := e.moveIP(t.Context(), us, "vol", "eth1"); o.OK || !strings.Contains(o.Detail, "needs an ip resource") {
		t.Errorf("move of a volume: %+v", o)
	}
	if o := e.moveIP(t.Context(), us, "vip", ""); o.OK {
		t.Error("move without an interface succeeded")
	}
	us[0].inst = plainInst{us[0].inst}
	if o := e.moveIP(t.Context(), us, "vip", "eth1"); o.OK || !strings.Contains(o.Detail, "cannot move") {
		t.Errorf("move with a kit without MoveTo: %+v", o)
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Errorf("truncate on a rune boundary = %q", got)
	}
	if got := truncate("abc", 5); got != "abc" {
		t.Errorf("got %q", got)
	}
}
