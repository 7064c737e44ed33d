package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/backstop-ha/backstop"
)

// checkSettings returns a resource's effective quick and deep check
// settings: its own, or the cluster timing's intervals with half of them
// as timeouts (the contract's rule for omitted settings).
func checkSettings(res backstop.Resource, t backstop.Timing) (quick, deep backstop.CheckSettings) {
	quick = backstop.CheckSettings{IntervalMS: t.QuickCheckIntervalMS, TimeoutMS: t.QuickCheckIntervalMS / 2}
	deep = backstop.CheckSettings{IntervalMS: t.DeepCheckIntervalMS, TimeoutMS: t.DeepCheckIntervalMS / 2}
	if res.QuickCheck != nil && res.QuickCheck.IntervalMS > 0 {
		quick = *res.QuickCheck
	}
	if res.DeepCheck != nil && res.DeepCheck.IntervalMS > 0 {
		deep = *res.DeepCheck
	}
	for _, s := range []*backstop.CheckSettings{&quick, &deep} {
		if s.IntervalMS <= 0 {
			s.IntervalMS = 1000
		}
		if s.TimeoutMS <= 0 || s.TimeoutMS > s.IntervalMS {
			s.TimeoutMS = s.IntervalMS / 2
		}
		if s.TimeoutMS <= 0 {
			s.TimeoutMS = 1
		}
	}
	return quick, deep
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// localRecovery returns a resource's local recovery budget.
func localRecovery(res backstop.Resource) backstop.LocalRecovery {
	if res.LocalRecovery != nil {
		return *res.LocalRecovery
	}
	return backstop.DefaultLocalRecovery
}

// pruneRestarts returns the restart times within the window before now.
func pruneRestarts(hist []time.Time, now time.Time, lr backstop.LocalRecovery) []time.Time {
	window := time.Duration(lr.WindowS) * time.Second
	out := hist[:0:0]
	for _, t := range hist {
		if now.Sub(t) < window {
			out = append(out, t)
		}
	}
	return out
}

// allowRestart decides local recovery: restart when fewer than
// max_restarts restarts happened within the window, otherwise fail the
// hierarchy. It returns the pruned history (with now appended when a
// restart is allowed).
func allowRestart(hist []time.Time, now time.Time, lr backstop.LocalRecovery) ([]time.Time, bool) {
	hist = pruneRestarts(hist, now, lr)
	if len(hist) < lr.MaxRestarts {
		return append(hist, now), true
	}
	return hist, false
}

// startMonitorsLocked starts one monitor per resource of h (in service).
func (r *runner) startMonitorsLocked(h *localHierarchy) {
	r.stopMonitorsLocked(h)
	ctx, cancel := context.WithCancel(r.monBase)
	h.stopMon = cancel
	epoch, gen := h.st.Epoch, h.gen
	for _, u := range h.units {
		if _, ok := h.health[u.res.Name]; !ok {
			h.health[u.res.Name] = &resHealth{}
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.monitor(ctx, h, u, epoch, gen)
		}()
	}
}

// stopMonitorsLocked stops h's monitors without waiting for them: a
// monitor may be the caller (local recovery), and a stopped monitor never
// acts again because it checks its context under h.ops.
func (r *runner) stopMonitorsLocked(h *localHierarchy) {
	if h.stopMon != nil {
		h.stopMon()
		h.stopMon = nil
	}
}

// monitor runs the quick and deep checks of one resource at their
// intervals until ctx ends. Checks of one resource run one at a time
// (a kit instance is used by one goroutine at a time), and only while no
// command or recovery changes the hierarchy. epoch and gen are those of the
// hierarchy when the monitors started: what recovery holds them to.
func (r *runner) monitor(ctx context.Context, h *localHierarchy, u *unit, epoch int64, gen uint64) {
	q, d := checkSettings(u.res, r.timing())
	now := time.Now()
	nextQ, nextD := now.Add(ms(q.IntervalMS)), now.Add(ms(d.IntervalMS))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := nextQ
		if nextD.Before(next) {
			next = nextD
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		deep := !now.Before(nextD)
		s := q
		if deep {
			s = d
		}
		if !h.ops.TryRLock() {
			// A command or a recovery is changing the hierarchy: look
			// again one quick interval later.
			nextQ = now.Add(ms(q.IntervalMS))
			if deep {
				nextD = nextQ
			}
			continue
		}
		if ctx.Err() != nil {
			h.ops.RUnlock()
			return
		}
		started := time.Now()
		err := r.check(ctx, u, deep, ms(s.TimeoutMS))
		h.ops.RUnlock()
		if ctx.Err() != nil {
			return
		}
		r.recordCheck(h, u, deep, err, started)
		q, d = checkSettings(u.res, r.timing()) // the timing may have changed
		done := time.Now()
		if deep {
			nextD = done.Add(ms(d.IntervalMS))
		} else {
			nextQ = done.Add(ms(q.IntervalMS))
		}
		if err == nil {
			continue
		}
		r.recoverResource(ctx, h, u.res, epoch, gen, deep, err, started)
		done = time.Now()
		nextQ, nextD = done.Add(ms(q.IntervalMS)), done.Add(ms(d.IntervalMS))
	}
}

// check runs one check with its timeout.
func (r *runner) check(ctx context.Context, u *unit, deep bool, timeout time.Duration) error {
	if u.inst == nil {
		return u.err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := u.inst.Check(cctx, deep)
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("check timed out after %v: %w", timeout, err)
	}
	return err
}

func checkName(deep bool) string {
	if deep {
		return "deep"
	}
	return "quick"
}

// recordCheck stores a check result and counts failures.
func (r *runner) recordCheck(h *localHierarchy, u *unit, deep bool, err error, at time.Time) {
	res := &checkResult{OK: err == nil, At: at}
	if err != nil {
		res.Detail = truncate(err.Error(), maxDetail)
	}
	h.mu.Lock()
	hl := h.health[u.res.Name]
	if hl == nil {
		hl = &resHealth{}
		h.health[u.res.Name] = hl
	}
	prev := &hl.quick
	if deep {
		prev = &hl.deep
	}
	wasFailing := *prev != nil && !(*prev).OK
	*prev = res
	if err != nil {
		hl.failures++
	}
	failures := hl.failures
	log := r.hlog(h)
	h.mu.Unlock()
	if err != nil {
		r.met.checkFailures.WithLabelValues(h.id, u.res.Name, checkName(deep)).Inc()
		log.Warn("check failed", keyEvent, eventCheckFailed, keyResource, u.res.Name, keyCheck, checkName(deep),
			keyDetail, res.Detail, "check_failures", failures)
	} else if wasFailing {
		log.Info("check passes again", keyEvent, eventCheckRecovered, keyResource, u.res.Name, keyCheck, checkName(deep))
	}
}

// recoverResource handles a failed check of res, seen by a monitor started
// at epoch and generation seen: a local restart of res and its dependents
// while the budget allows, else the hierarchy fails on this node and is
// taken out of service here (the control plane then fails it over).
//
// Never two copies: local recovery acts only on a hierarchy still in
// service and active here, at the epoch and generation its monitor saw,
// with its monitor's context alive. The dependency checks and the
// authority question run without h.mu, and fencing may complete meanwhile
// (and the lease be renewed after it); so the bracket (operate) checks all
// of it again under h.mu right before the restart begins, the executor's
// gate again right before each start, and the bracket again before the
// outcome is recorded.
func (r *runner) recoverResource(ctx context.Context, h *localHierarchy, res backstop.Resource, epoch int64, seen uint64, deep bool, cerr error, checkedAt time.Time) {
	h.ops.Lock()
	defer h.ops.Unlock()
	spec := func(name string) opSpec {
		return opSpec{name: name, ctx: ctx, from: []placement{stateInService}, needActive: true,
			gen: seen, hasGen: true, epoch: epoch}
	}
	h.mu.Lock()
	if p := spec("local recovery"); r.admitLocked(h, &p) != nil {
		h.mu.Unlock()
		return // a command or fencing took over
	}
	if t, ok := h.restartedAt[res.Name]; ok && !t.Before(checkedAt) {
		h.mu.Unlock()
		return // restarted (with a dependency) since this check began
	}
	units := h.units
	h.mu.Unlock()

	// A resource often fails because something it depends on did (the
	// service because its volume went away): recover the first failing
	// dependency instead, which restarts this resource too, and charge
	// the restart to it.
	for _, i := range ancestors(units, res.Name) {
		u := units[i]
		q, _ := checkSettings(u.res, r.timing())
		started := time.Now()
		if err := r.check(ctx, u, false, ms(q.TimeoutMS)); err != nil {
			r.recordCheck(h, u, false, err, started)
			res, cerr, deep = u.res, err, false
			break
		}
	}

	if r.hookBeforeAuthority != nil {
		r.hookBeforeAuthority(h)
	}
	if r.authority != nil {
		h.mu.Lock()
		// The command's authority holds only while the placement it made
		// holds: cmdEpoch is cleared by every preemption and every
		// transition out of service, and the bracket below rechecks the
		// generation whatever authority answers.
		byCommand := h.cmdEpoch == epoch && epoch > 0 && h.gen == seen
		h.mu.Unlock()
		if ok, why := r.authority(h.id, epoch, byCommand); !ok {
			// Not ours to restart: fail it here so nothing of it is left
			// running, and let the control plane decide where it goes.
			r.hlog(h).Warn("local recovery withheld: "+why, keyEvent, eventRecoveryWithheld, keyResource, res.Name, keyDetail, cerr.Error())
			cerr = fmt.Errorf("%v; local recovery withheld: %s", cerr, why)
			r.failLocally(ctx, h, res, deep, cerr, epoch, seen)
			return
		}
	}

	lr := localRecovery(res)
	errExhausted := fmt.Errorf("local recovery exhausted: %d restarts within %d s allowed", lr.MaxRestarts, lr.WindowS)
	p := spec("local recovery")
	p.prepare = func() error {
		hist, ok := allowRestart(h.restarts[res.Name], r.now(), lr)
		h.restarts[res.Name] = hist
		if !ok {
			return errExhausted
		}
		r.met.restarts.WithLabelValues(h.id, res.Name).Inc()
		r.hlog(h).Warn("local recovery: restarting the resource and its dependents",
			keyEvent, eventLocalRestart, keyResource, res.Name, keyCheck, checkName(deep), keyDetail, cerr.Error(),
			keyRestarts, len(hist), "max_restarts", lr.MaxRestarts, "window_s", lr.WindowS)
		return nil
	}
	start := time.Now()
	p.run = func(ctx context.Context, e *executor, units []*unit) outcome { return e.restart(ctx, units, res.Name) }
	p.finish = func(o outcome) { r.recordRestartsLocked(h, o) }
	o, err := r.operate(h, p)
	switch {
	case errors.Is(err, errExhausted):
		r.failLocally(ctx, h, res, deep, fmt.Errorf("%v; %w", cerr, err), epoch, seen)
	case err != nil:
		r.hlog(h).Info("local recovery not started: "+err.Error(), keyEvent, eventRecoveryWithheld, keyResource, res.Name)
	default:
		r.hlog(h).Info("local recovery done", keyEvent, eventLocalRestart+"_done", keyResource, res.Name, "ok", o.OK,
			keyDurationMS, time.Since(start).Milliseconds(), keyDetail, o.Detail)
	}
}

// failLocally marks a hierarchy failed on this node and takes it out of
// service here, in reverse order; the control plane fails it over. Like
// local recovery it acts only on a hierarchy still in service and active
// at the epoch and generation its monitor saw.
func (r *runner) failLocally(ctx context.Context, h *localHierarchy, res backstop.Resource, deep bool, cerr error, epoch int64, seen uint64) {
	detail := truncate(fmt.Sprintf("resource %s failed its %s check: %v", res.Name, checkName(deep), cerr), maxDetail)
	_, _ = r.operate(h, opSpec{
		name: "local failure", ctx: ctx, from: []placement{stateInService}, needActive: true,
		gen: seen, hasGen: true, epoch: epoch, stopMonitors: true, enter: stateFailed, enterDetail: detail,
		prepare: func() error {
			r.met.hierarchyFailures.Inc()
			r.hlog(h).Error("hierarchy failed on this node: taking it out of service here",
				keyEvent, eventHierarchyFailed, keyResource, res.Name, keyDetail, detail, keyEpoch, epoch)
			return nil
		},
		run: func(ctx context.Context, e *executor, units []*unit) outcome { return e.takeDown(ctx, units) },
		finish: func(o outcome) {
			h.st.Active = !o.Clean
			if !o.OK {
				h.st.Detail = joinDetail(detail, "take-down: "+o.Detail)
			}
		},
	})
}

// ancestors returns the indexes of the units name depends on, directly or
// through others, in bring-up order.
func ancestors(units []*unit, name string) []int {
	idx := map[string]int{}
	for i, u := range units {
		idx[u.res.Name] = i
	}
	need := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		i, ok := idx[n]
		if !ok {
			return
		}
		for _, d := range units[i].res.DependsOn {
			if !need[d] {
				need[d] = true
				visit(d)
			}
		}
	}
	visit(name)
	var out []int
	for i, u := range units {
		if need[u.res.Name] {
			out = append(out, i)
		}
	}
	return out
}
