package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
)

// IPMover is implemented by kit instances that can move their address to
// another interface on command (the ip kit). move_ip needs it; the kit
// interface itself has no such method because only one kind can move.
type IPMover interface {
	// MoveTo moves the resource's address to the named interface and
	// announces it there. Moving to the interface that already holds it
	// succeeds.
	MoveTo(ctx context.Context, iface string) error
}

// Step actions, as in the contract's StepResult.action.
const (
	actionStart        = "start"
	actionStop         = "stop"
	actionRestart      = "restart"
	actionMoveIP       = "move_ip"
	actionRollbackStop = "rollback_stop"
)

// maxDetail is the contract's bound on detail strings.
const maxDetail = 4096

// unit is one resource of a hierarchy with its kit instance. err is set
// when the instance could not be made (bad parameters, unknown kind); every
// step on such a unit fails with it.
type unit struct {
	res  backstop.Resource
	inst kit.Instance
	err  error
}

// stepResult is the outcome of one step.
type stepResult struct {
	Resource string
	Action   string
	OK       bool
	Detail   string
	Duration time.Duration
	// Overtaken marks a step that started something and succeeded, but
	// found the operation overtaken (fenced, relinquished) when it
	// finished: what it started may have escaped the fencing.
	Overtaken bool
}

// outcome is the outcome of a whole command.
type outcome struct {
	Steps []stepResult
	OK    bool
	// Detail says which step failed and why; empty on success.
	Detail string
	// Reason is backstop.FailedFenced or backstop.FailedIsolated when the
	// node, not the hierarchy, made the operation fail; empty otherwise.
	Reason string
	// Clean is true when nothing of the hierarchy can be left running
	// (after a take-down or rollback where every stop succeeded).
	Clean bool
}

// executor runs the steps of commands on kit instances: bring-up in the
// order given (children first), take-down in reverse, restart with
// dependents, and address moves. It keeps no state; callers serialize
// commands per hierarchy.
type executor struct {
	log *slog.Logger
	// stepTimeout bounds each Start or Stop.
	stepTimeout time.Duration
	// gate, when set, is asked immediately before and after every step
	// that can make something run (startsSomething): an error refuses the
	// step before, and marks it Overtaken after. Stops are never gated:
	// stopping can't make a second copy.
	gate func() error
}

// startsSomething says whether a step action can make something run.
func startsSomething(action string) bool {
	switch action {
	case actionStart, actionRestart, actionMoveIP:
		return true
	}
	return false
}

// run performs one step and logs it.
func (e *executor) run(ctx context.Context, u *unit, action string, f func(context.Context) error) stepResult {
	start := time.Now()
	gated := e.gate != nil && startsSomething(action)
	var err error
	var overtaken bool
	switch {
	case u.err != nil:
		err = u.err
	case ctx.Err() != nil:
		// Cancelled (fencing, shutdown): start nothing more.
		err = context.Cause(ctx)
	default:
		if gated {
			if err = e.gate(); err != nil {
				break
			}
		}
		sctx, cancel := context.WithTimeout(ctx, e.stepTimeout)
		err = f(sctx)
		cancel()
		overtaken = err == nil && gated && e.gate() != nil
	}
	s := stepResult{Resource: u.res.Name, Action: action, OK: err == nil, Duration: time.Since(start), Overtaken: overtaken}
	if err != nil {
		s.Detail = truncate(err.Error(), maxDetail)
	}
	lvl := slog.LevelInfo
	if err != nil {
		lvl = slog.LevelWarn
	}
	e.log.Log(ctx, lvl, "step", keyEvent, eventStep, keyResource, s.Resource, keyAction, action,
		"ok", s.OK, keyDurationMS, s.Duration.Milliseconds(), keyDetail, s.Detail)
	return s
}

func stepFailed(s stepResult) string {
	return fmt.Sprintf("step %s/%s failed: %s", s.Resource, s.Action, s.Detail)
}

// bringUp starts units in order. On the first failure it stops, in
// reverse, what it started (steps rollback_stop), including the failed
// unit itself, which may be half started.
func (e *executor) bringUp(ctx context.Context, units []*unit) outcome {
	var o outcome
	for i, u := range units {
		s := e.run(ctx, u, actionStart, u.startFn())
		o.Steps = append(o.Steps, s)
		if s.OK {
			continue
		}
		o.Detail = stepFailed(s)
		o.Clean = true
		// The rollback must run even when ctx was cancelled (the failure
		// may be that cancellation): a half-started hierarchy must not
		// stay half up.
		rctx := context.WithoutCancel(ctx)
		for j := i; j >= 0; j-- {
			if units[j].err != nil {
				continue
			}
			r := e.run(rctx, units[j], actionRollbackStop, units[j].stopFn())
			o.Steps = append(o.Steps, r)
			if !r.OK {
				o.Clean = false
			}
		}
		return o
	}
	o.OK, o.Clean = true, false
	return o
}

// takeDown stops units in reverse order, continuing past failures so that
// as much as possible is down; it fails if any step failed.
func (e *executor) takeDown(ctx context.Context, units []*unit) outcome {
	o := outcome{OK: true, Clean: true}
	for i := len(units) - 1; i >= 0; i-- {
		u := units[i]
		if u.err != nil && u.inst == nil {
			// Never started by this agent: nothing to stop, but say so.
			o.Steps = append(o.Steps, stepResult{Resource: u.res.Name, Action: actionStop, OK: true, Detail: "no instance: " + truncate(u.err.Error(), 512)})
			continue
		}
		s := e.run(ctx, u, actionStop, u.stopFn())
		o.Steps = append(o.Steps, s)
		if !s.OK {
			if o.OK {
				o.Detail = stepFailed(s)
			}
			o.OK, o.Clean = false, false
		}
	}
	return o
}

// dependents returns the indexes of the units that depend on target,
// directly or through others, in bring-up order.
func dependents(units []*unit, target string) []int {
	affected := map[string]bool{target: true}
	var out []int
	for i, u := range units { // bring-up order: dependencies come first
		for _, d := range u.res.DependsOn {
			if affected[d] && !affected[u.res.Name] {
				affected[u.res.Name] = true
				out = append(out, i)
			}
		}
	}
	return out
}

// indexOf returns the index of the unit named name, or -1.
func indexOf(units []*unit, name string) int {
	for i, u := range units {
		if u.res.Name == name {
			return i
		}
	}
	return -1
}

// restart stops target's dependents in reverse order, restarts target
// (stop, then start, as one step) and starts the dependents again. It
// stops at the first failure; what is left down is then caught by the
// monitors.
func (e *executor) restart(ctx context.Context, units []*unit, target string) outcome {
	t := indexOf(units, target)
	if t < 0 {
		return outcome{Detail: fmt.Sprintf("no resource %q in this hierarchy", target),
			Steps: []stepResult{{Resource: target, Action: actionRestart, Detail: "unknown resource"}}}
	}
	deps := dependents(units, target)
	var o outcome
	fail := func(s stepResult) outcome {
		o.Detail = stepFailed(s)
		return o
	}
	for i := len(deps) - 1; i >= 0; i-- {
		s := e.run(ctx, units[deps[i]], actionStop, units[deps[i]].stopFn())
		o.Steps = append(o.Steps, s)
		if !s.OK {
			return fail(s)
		}
	}
	u := units[t]
	s := e.run(ctx, u, actionRestart, func(ctx context.Context) error {
		if err := u.inst.Stop(ctx); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		if err := u.inst.Start(ctx); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		return nil
	})
	o.Steps = append(o.Steps, s)
	if !s.OK {
		return fail(s)
	}
	for _, i := range deps {
		s := e.run(ctx, units[i], actionStart, units[i].startFn())
		o.Steps = append(o.Steps, s)
		if !s.OK {
			return fail(s)
		}
	}
	o.OK = true
	return o
}

// errCannotMove is returned for move_ip on a resource whose kit cannot
// move addresses.
var errCannotMove = errors.New("the resource's kit cannot move addresses (no MoveTo)")

// moveIP moves the address of the ip resource target to iface.
func (e *executor) moveIP(ctx context.Context, units []*unit, target, iface string) outcome {
	t := indexOf(units, target)
	if t < 0 {
		return outcome{Detail: fmt.Sprintf("no resource %q in this hierarchy", target),
			Steps: []stepResult{{Resource: target, Action: actionMoveIP, Detail: "unknown resource"}}}
	}
	u := units[t]
	s := e.run(ctx, u, actionMoveIP, func(ctx context.Context) error {
		if u.res.Kind != backstop.KindIP {
			return fmt.Errorf("resource %q is of kind %s, move_ip needs an ip resource", u.res.Name, u.res.Kind)
		}
		if iface == "" {
			return errors.New("move_ip needs a destination interface")
		}
		m, ok := u.inst.(IPMover)
		if !ok {
			return errCannotMove
		}
		return m.MoveTo(ctx, iface)
	})
	o := outcome{Steps: []stepResult{s}, OK: s.OK}
	if !s.OK {
		o.Detail = stepFailed(s)
	}
	return o
}

func (u *unit) startFn() func(context.Context) error {
	return func(ctx context.Context) error { return u.inst.Start(ctx) }
}

func (u *unit) stopFn() func(context.Context) error {
	return func(ctx context.Context) error { return u.inst.Stop(ctx) }
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
