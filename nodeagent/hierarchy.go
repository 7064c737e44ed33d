package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
)

// hierarchyRecord is the local state of one hierarchy on this node, persisted in
// hierarchies.json so that a restarted agent resumes monitoring what it
// runs and still knows what to fence.
type hierarchyRecord struct {
	ID    string    `json:"id"`
	Name  string    `json:"name,omitempty"`
	State placement `json:"state"`
	Epoch int64     `json:"epoch"`
	// Detail says why the state is what it is (for failed, what failed).
	Detail string `json:"detail,omitempty"`
	// Active is true while any resource may be running here: from the
	// first start until a take-down, rollback or fencing that fully
	// succeeded. Fencing targets active hierarchies.
	Active bool `json:"active"`
	// Resources are those of the last command, in bring-up order.
	Resources []backstop.Resource `json:"resources"`
	UpdatedAt time.Time           `json:"updated_at"`
}

// localHierarchy is one hierarchy's runtime on this node: its state, kit instances,
// monitors and health.
type localHierarchy struct {
	id string
	// ops is held for writing by commands, local recovery and the
	// take-down of a failed hierarchy, and for reading by checks: a check
	// never runs while the hierarchy changes (it would see a resource
	// stopped on purpose), and two changes never overlap.
	ops sync.RWMutex

	// mu guards the fields below.
	mu    sync.Mutex
	st    hierarchyRecord
	units []*unit
	// cancelOp cancels the running command or recovery (fencing does).
	cancelOp context.CancelFunc
	// gen increases when the hierarchy is preempted (fenced or
	// relinquished, see preemptLocked): an operation that started before
	// must neither act any more nor record its outcome over the
	// preemption.
	gen uint64
	// preemptedByFence says whether the newest preemption was a fencing
	// (false: a relinquish, whose take-down follows).
	preemptedByFence bool
	// stopMon stops the monitors; nil when none run.
	stopMon context.CancelFunc
	health  map[string]*resHealth
	// restarts are the local restart times by resource, for the budget.
	restarts map[string][]time.Time
	// restartedAt is when each resource was last (re)started by recovery;
	// a failed check that began before it is stale.
	restartedAt map[string]time.Time
	// cmdEpoch is the epoch of the last bring_in_service this process
	// ran for the hierarchy (not persisted: a restarted agent must get
	// the control plane's word again before acting on its own).
	cmdEpoch int64
}

// resHealth is what the monitors know of one resource.
type resHealth struct {
	quick, deep *checkResult
	failures    int64
}

// checkResult is the last result of one check.
type checkResult struct {
	OK     bool
	Detail string
	At     time.Time
}

// runner owns the hierarchies of this node: it executes verified commands
// on them, monitors in-service resources, recovers locally, fences, and
// persists their local state.
type runner struct {
	dir         string
	newInstance func(backstop.Resource, kit.Env) (kit.Instance, error)
	log         *slog.Logger
	exec        *executor
	met         *metrics
	// timing returns the current timing (it changes live).
	timing func() backstop.Timing
	now    func() time.Time

	// base is the parent of operations (commands, recoveries) and monBase
	// of monitors; both end at shutdown, operations a little later.
	base    context.Context
	monBase context.Context
	// wg counts monitor goroutines.
	wg sync.WaitGroup

	// authority, when set, says whether this node may act on its own on a
	// hierarchy it runs at an epoch (local recovery restarts): only while
	// its lease is valid and the control plane's configuration, fetched
	// by this process, still places the hierarchy here at that epoch.
	// Without it a rebooted node, or one the control plane has already
	// failed over, would restart a second copy.
	authority func(hierarchyID string, epoch int64, byCommand bool) (bool, string)

	// configStore, when set, gives a files resource of a hierarchy its
	// kit.ConfigStore (the agent API); without it files resources run
	// as if the control plane were unreachable.
	configStore func(hierarchyID, resource string) kit.ConfigStore

	// hookBeforeAuthority, tests only: called by local recovery between
	// its dependency checks (h.mu not held) and asking authority, the
	// window in which fencing may overtake it.
	hookBeforeAuthority func(h *localHierarchy)

	// saveMu serializes writes of hierarchies.json.
	saveMu sync.Mutex
	// mu guards hs.
	mu sync.Mutex
	hs map[string]*localHierarchy
}

func newRunner(dir string, newInstance func(backstop.Resource, kit.Env) (kit.Instance, error), log *slog.Logger, met *metrics, timing func() backstop.Timing, stepTimeout time.Duration) *runner {
	if newInstance == nil {
		newInstance = kit.New
	}
	return &runner{
		dir: dir, newInstance: newInstance, log: log, met: met, timing: timing, now: time.Now,
		exec: &executor{log: log, stepTimeout: stepTimeout},
		base: context.Background(), monBase: context.Background(),
		hs: map[string]*localHierarchy{},
	}
}

func newHierarchy(id string) *localHierarchy {
	return &localHierarchy{id: id, st: hierarchyRecord{ID: id, State: stateOutOfService},
		health: map[string]*resHealth{}, restarts: map[string][]time.Time{}, restartedAt: map[string]time.Time{}}
}

// get returns the hierarchy id, creating it out of service.
func (r *runner) get(id string) *localHierarchy {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hs[id]
	if !ok {
		h = newHierarchy(id)
		r.hs[id] = h
	}
	return h
}

// list returns the hierarchies sorted by id.
func (r *runner) list() []*localHierarchy {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*localHierarchy, 0, len(r.hs))
	for _, h := range r.hs {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// hlog returns the logger of a hierarchy.
func (r *runner) hlog(h *localHierarchy) *slog.Logger {
	return r.log.With(keyHierarchy, h.id, keyHierarchyName, h.st.Name)
}

// load reads hierarchies.json. Hierarchies the previous agent process left
// half changed (starting, stopping) become failed: whether their resources
// run is unknown, so they stay active (fenceable) and unmonitored until a
// command settles them.
func (r *runner) load() error {
	var list []hierarchyRecord
	if _, err := loadJSON(filepath.Join(r.dir, fileHierarchies), &list); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range list {
		if st.ID == "" {
			continue
		}
		h := newHierarchy(st.ID)
		switch {
		case st.State == stateStarting || st.State == stateStopping:
			st.Detail = fmt.Sprintf("the agent restarted while the hierarchy was %s", st.State)
			st.State = stateFailed
		case !st.State.valid():
			// Whether anything runs is unknown: failed, and active so
			// that fencing covers it.
			st.Detail = fmt.Sprintf("unknown state %q in %s", st.State, fileHierarchies)
			st.State, st.Active = stateFailed, true
		}
		h.st = st
		r.hs[st.ID] = h
	}
	return nil
}

// start makes the runner operational: monitors run under monCtx and
// operations under opsCtx. It creates the kit instances of active
// hierarchies (so they can be fenced) and resumes monitoring the
// in-service ones. Nothing is started or stopped.
func (r *runner) start(monCtx, opsCtx context.Context) {
	r.base, r.monBase = opsCtx, monCtx
	for _, h := range r.list() {
		h.mu.Lock()
		if h.st.Active {
			h.units = r.unitsLocked(h, h.st.Resources)
		}
		if h.st.State == stateInService {
			r.startMonitorsLocked(h)
			r.hlog(h).Info("hierarchy resumed: monitoring what the previous agent process brought in service",
				keyEvent, eventResumed, keyEpoch, h.st.Epoch, keyState, h.st.State)
		} else if h.st.Active {
			r.hlog(h).Warn("hierarchy resumed in an unsettled state: not monitored, fenced if needed",
				keyEvent, eventResumed, keyEpoch, h.st.Epoch, keyState, h.st.State, keyDetail, h.st.Detail)
		}
		h.mu.Unlock()
	}
	r.save()
}

// wait waits for the monitors to end (after their context ended).
func (r *runner) wait() { r.wg.Wait() }

var safeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// unitsLocked returns the units of resources, reusing the instances of
// identical resources so that a kit keeps its process handles.
func (r *runner) unitsLocked(h *localHierarchy, resources []backstop.Resource) []*unit {
	old := map[string]*unit{}
	for _, u := range h.units {
		old[u.res.Name] = u
	}
	units := make([]*unit, 0, len(resources))
	for _, res := range resources {
		if u, ok := old[res.Name]; ok && u.err == nil && reflect.DeepEqual(u.res, res) {
			units = append(units, u)
			continue
		}
		u := &unit{res: res}
		if !safeNameRE.MatchString(res.Name) || !safeNameRE.MatchString(h.id) {
			u.err = fmt.Errorf("resource %q: unusable name", res.Name)
		} else {
			dir := filepath.Join(r.dir, dirResources, h.id, res.Name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				u.err = fmt.Errorf("resource %q: state directory: %w", res.Name, err)
			} else {
				env := kit.Env{StateDir: dir, Log: r.log.With(keyHierarchy, h.id, keyResource, res.Name, "kit", res.Kind)}
				if res.Kind == backstop.KindFiles && r.configStore != nil {
					env.Config = r.configStore(h.id, res.Name)
				}
				u.inst, u.err = r.newInstance(res, env)
				if u.err != nil {
					u.inst = nil
				}
			}
		}
		units = append(units, u)
	}
	return units
}

// save writes the state of every hierarchy. Errors are logged: the agent
// keeps running on its in-memory state, which is what it acts on.
func (r *runner) save() {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	hs := r.list()
	list := make([]hierarchyRecord, 0, len(hs))
	for _, h := range hs {
		h.mu.Lock()
		list = append(list, h.st)
		h.mu.Unlock()
	}
	if err := saveJSON(filepath.Join(r.dir, fileHierarchies), list); err != nil {
		r.log.Error("cannot persist the hierarchies' local state", keyErr, err)
	}
}

// execFor returns an executor logging with h's (and cmd's, if any) ids.
func (r *runner) execFor(h *localHierarchy, cmd *envelope.Command) *executor {
	log := r.log.With(keyHierarchy, h.id)
	if cmd != nil {
		log = log.With(keyCommand, cmd.ID)
	}
	return &executor{log: log, stepTimeout: r.exec.stepTimeout}
}

// placement is the local state of a hierarchy on this node. Its values are
// the contract's placement states (backstop.Placement*), which is what the
// heartbeat reports.
type placement string

const (
	stateOutOfService = placement(backstop.PlacementOutOfService)
	stateStarting     = placement(backstop.PlacementStarting)
	stateInService    = placement(backstop.PlacementInService)
	stateStopping     = placement(backstop.PlacementStopping)
	stateFailed       = placement(backstop.PlacementFailed)
)

// transitions is the agent's state machine for one hierarchy:
// transitions[from][to] is true when the hierarchy may go from one state
// to the other. transitionLocked refuses every other change. What each
// edge is for:
//
//	out_of_service → starting        bring_in_service
//	out_of_service → stopping        take_out_of_service (a take-down of what may still run)
//	out_of_service → failed          an operation overtaken by fencing could not fence what it started
//	starting       → in_service      the bring-up succeeded (the only way into in_service)
//	starting       → failed          the bring-up failed; a fencing failed
//	starting       → out_of_service  fenced
//	starting       → stopping        relinquished
//	in_service     → starting        bring_in_service again (a newer epoch)
//	in_service     → stopping        take_out_of_service, relinquished
//	in_service     → failed          failed locally (checks, recovery withheld or exhausted); a fencing failed
//	in_service     → out_of_service  fenced
//	stopping       → out_of_service  the take-down succeeded; fenced
//	stopping       → failed          the take-down failed; a fencing failed
//	stopping       → stopping        take_out_of_service or a relinquish while a take-down is pending
//	stopping       → starting        a newer bring_in_service ran before a pending relinquish
//	failed         → starting        bring_in_service
//	failed         → stopping        take_out_of_service, relinquished
//	failed         → out_of_service  fenced
//	failed         → failed          a fencing failed again
//
// Local recovery and restart_resource/move_ip change no state: they act
// only on a hierarchy in service, and leave it so.
var transitions = map[placement]map[placement]bool{
	stateOutOfService: {stateStarting: true, stateStopping: true, stateFailed: true},
	stateStarting:     {stateInService: true, stateFailed: true, stateOutOfService: true, stateStopping: true},
	stateInService:    {stateStarting: true, stateStopping: true, stateFailed: true, stateOutOfService: true},
	stateStopping:     {stateOutOfService: true, stateFailed: true, stateStopping: true, stateStarting: true},
	stateFailed:       {stateStarting: true, stateStopping: true, stateOutOfService: true, stateFailed: true},
}

// valid says whether p is a known state.
func (p placement) valid() bool {
	_, ok := transitions[p]
	return ok
}

// words is p for people: "in service".
func (p placement) words() string { return strings.ReplaceAll(string(p), "_", " ") }

// canTransition says whether the state machine allows from → to.
func canTransition(from, to placement) error {
	if !transitions[from][to] {
		return fmt.Errorf("invalid hierarchy state transition %s → %s", from, to)
	}
	return nil
}

// transitionLocked is the one place where a hierarchy's state changes: it
// refuses (and logs as an error) a transition the state machine does not
// allow, and otherwise records and logs the new state. Leaving in service
// ends the authority of the command that brought the hierarchy in service
// (cmdEpoch): local recovery on it needs a new command or the control
// plane's configuration again.
func (r *runner) transitionLocked(h *localHierarchy, to placement, detail string) error {
	from := h.st.State
	if err := canTransition(from, to); err != nil {
		r.hlog(h).Error("hierarchy state transition refused", keyEvent, eventHierarchyState, keyErr, err,
			"from", string(from), keyState, string(to), keyEpoch, h.st.Epoch, keyDetail, detail)
		return err
	}
	if to != stateInService {
		h.cmdEpoch = 0
	}
	h.st.State, h.st.Detail, h.st.UpdatedAt = to, detail, r.now()
	lvl := slog.LevelInfo
	if to == stateFailed {
		lvl = slog.LevelWarn
	}
	r.hlog(h).Log(context.Background(), lvl, "hierarchy state", keyEvent, eventHierarchyState,
		"from", string(from), keyState, string(to), keyEpoch, h.st.Epoch, "active", h.st.Active, keyDetail, detail)
	return nil
}

// preemptLocked takes a hierarchy from whatever operation runs on it,
// without waiting for it: it bumps the generation, cancels the operation
// and stops the monitors. Fencing and relinquish use it; the preempted
// operation, back in the bracket, finds the generation changed and
// neither acts nor records anything more. It returns the new generation.
func (r *runner) preemptLocked(h *localHierarchy, byFence bool) uint64 {
	h.gen++
	h.preemptedByFence = byFence
	h.cmdEpoch = 0
	if h.cancelOp != nil {
		h.cancelOp()
	}
	r.stopMonitorsLocked(h)
	return h.gen
}

// beginOpLocked registers a running operation under h.mu; the returned context
// is cancelled by fencing.
func (r *runner) beginOpLocked(h *localHierarchy) (context.Context, uint64) {
	ctx, cancel := context.WithCancel(r.base)
	h.cancelOp = cancel
	return ctx, h.gen
}

func (r *runner) endOpLocked(h *localHierarchy) {
	if h.cancelOp != nil {
		h.cancelOp()
		h.cancelOp = nil
	}
}

// fencedDetail is the detail of operations overtaken by fencing.
const fencedDetail = "the node fenced itself while the command ran"

// relinquishedDetail is the detail of operations overtaken by a relinquish.
const relinquishedDetail = "the hierarchy was relinquished while the operation ran"

// opSpec is one operation on a hierarchy, as the bracket (operate) runs
// it: what must hold for it to begin, the state it enters, its kit actions
// and how its outcome is recorded.
type opSpec struct {
	// name names the operation in refusals ("bring_in_service",
	// "local_recovery", ...).
	name string
	// cmd is the command, nil for the agent's own operations.
	cmd *envelope.Command
	// ctx, when set, must not be done: the monitor's context, which
	// fencing and commands end.
	ctx context.Context
	// from lists the states the operation may begin in; empty: any.
	from []placement
	// needActive requires the hierarchy active.
	needActive bool
	// gen, when hasGen, is the generation the operation was decided at
	// (local recovery: the one its monitor observed); any preemption
	// since refuses it.
	gen    uint64
	hasGen bool
	// epoch, when non-zero, must be the hierarchy's epoch.
	epoch int64
	// stopMonitors stops the monitors before the operation begins.
	stopMonitors bool
	// enter is the state the operation enters when it begins ("" keeps
	// the state), with enterDetail.
	enter       placement
	enterDetail string
	// prepare, when set, runs under h.mu once every check passed, before
	// anything changes: it may refuse the operation (and then must have
	// changed nothing it should not), or set the hierarchy up for it.
	prepare func() error
	// run performs the kit actions, without h.mu, with the operation's
	// context and units, through e, whose gate refuses to start anything
	// once the operation is overtaken.
	run func(ctx context.Context, e *executor, units []*unit) outcome
	// finish, when set, records the outcome under h.mu, only when the
	// generation and the state are still those the operation began with.
	finish func(o outcome)
}

// errOvertaken is the gate's answer once an operation has been overtaken.
var errOvertaken = errors.New("overtaken by fencing or a relinquish: nothing more is started")

// admitLocked checks, under h.mu, that p may begin now.
func (r *runner) admitLocked(h *localHierarchy, p *opSpec) error {
	switch {
	case p.ctx != nil && p.ctx.Err() != nil:
		return fmt.Errorf("%s: ended before it began (a command or fencing took over)", p.name)
	case p.hasGen && h.gen != p.gen:
		return fmt.Errorf("%s: the hierarchy was fenced or relinquished since the operation was decided", p.name)
	case len(p.from) > 0 && !slices.Contains(p.from, h.st.State):
		want := make([]string, len(p.from))
		for i, s := range p.from {
			want[i] = s.words()
		}
		return fmt.Errorf("%s needs the hierarchy %s on this node; it is %s", p.name, strings.Join(want, " or "), h.st.State.words())
	case p.needActive && !h.st.Active:
		return fmt.Errorf("%s needs the hierarchy active on this node; it is not", p.name)
	case p.epoch != 0 && h.st.Epoch != p.epoch:
		return fmt.Errorf("%s was decided at epoch %d; the hierarchy is at epoch %d", p.name, p.epoch, h.st.Epoch)
	}
	if p.enter != "" {
		if err := canTransition(h.st.State, p.enter); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return nil
}

// operate is the operation bracket, the one way commands and local
// recovery act on a hierarchy. The caller holds h.ops. Under h.mu it
// checks that the operation may begin (context, generation, state,
// activity, epoch, transition; admitLocked), prepares it, stops the
// monitors if asked, enters its state and registers it (beginOpLocked);
// then, without h.mu, runs its kit actions, each action that can start
// something gated by a check of the generation and state under h.mu
// immediately before it (and again after it); then, under h.mu again,
// records the outcome only if no preemption happened meanwhile. An
// operation overtaken by fencing fences what it started after the
// fencing began. A refused operation returns an outcome saying why and
// the error.
func (r *runner) operate(h *localHierarchy, p opSpec) (outcome, error) {
	h.mu.Lock()
	if err := r.admitLocked(h, &p); err != nil {
		h.mu.Unlock()
		return outcome{Detail: err.Error()}, err
	}
	if p.prepare != nil {
		if err := p.prepare(); err != nil {
			h.mu.Unlock()
			return outcome{Detail: err.Error()}, err
		}
	}
	if p.stopMonitors {
		r.stopMonitorsLocked(h)
	}
	if p.enter != "" {
		if err := r.transitionLocked(h, p.enter, p.enterDetail); err != nil {
			h.mu.Unlock() // admitLocked checked it: not reached
			return outcome{Detail: err.Error()}, err
		}
	}
	ctx, gen := r.beginOpLocked(h)
	state, units := h.st.State, h.units
	h.mu.Unlock()
	if p.enter != "" {
		r.save()
	}

	e := r.execFor(h, p.cmd)
	e.gate = func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.gen != gen || h.st.State != state || ctx.Err() != nil {
			return errOvertaken
		}
		return nil
	}
	o := p.run(ctx, e, units)

	h.mu.Lock()
	r.endOpLocked(h)
	if h.gen != gen || h.st.State != state {
		byFence := h.preemptedByFence
		h.mu.Unlock()
		d := relinquishedDetail
		o.OK = false
		if byFence {
			d = fencedDetail
			if r.fenceOvertaken(h, units, o) {
				o.Reason = backstop.FailedFenced
			}
		}
		o.Detail = joinDetail(d, o.Detail)
		return o, nil
	}
	if p.finish != nil {
		p.finish(o)
	}
	h.mu.Unlock()
	r.save()
	return o, nil
}

// fenceOvertaken fences again the units an operation overtaken by fencing
// started after the fencing began (steps marked overtaken): the fencing
// could not wait for those kit calls, and may have run its Fence before
// they finished. A failure leaves the hierarchy failed and active, for the
// next fencing round.
//
// It reports whether the hierarchy is left fenced clean.
func (r *runner) fenceOvertaken(h *localHierarchy, units []*unit, o outcome) bool {
	var errs []string
	for i := len(o.Steps) - 1; i >= 0; i-- {
		s := o.Steps[i]
		if !s.Overtaken {
			continue
		}
		u := units[indexOf(units, s.Resource)]
		r.hlog(h).Error("a kit action finished after fencing began: fencing the resource again",
			keyEvent, eventFenced, keyResource, s.Resource, keyAction, s.Action)
		if err := u.inst.Fence(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.Resource, err))
		}
	}
	if len(errs) == 0 {
		return true
	}
	h.mu.Lock()
	r.preemptLocked(h, true) // the fencing in progress must not record it clean
	h.st.Active = true
	_ = r.transitionLocked(h, stateFailed, truncate(fmt.Sprintf("fence after an overtaken operation failed: %v", errs), maxDetail))
	h.mu.Unlock()
	r.save()
	return false
}

// execute runs a verified, recorded command. The caller runs the commands
// of one hierarchy one at a time, in order.
func (r *runner) execute(cmd *envelope.Command) outcome {
	h := r.get(cmd.HierarchyID)
	h.ops.Lock()
	defer h.ops.Unlock()
	switch cmd.Action {
	case envelope.BringInService:
		return r.bringInService(h, cmd)
	case envelope.TakeOutOfService:
		return r.takeOutOfService(h, cmd)
	case envelope.RestartResource, envelope.MoveIP:
		return r.changeResource(h, cmd)
	}
	return outcome{Detail: fmt.Sprintf("unknown action %q", cmd.Action)}
}

func (r *runner) bringInService(h *localHierarchy, cmd *envelope.Command) outcome {
	o, _ := r.operate(h, opSpec{
		name: string(cmd.Action), cmd: cmd, stopMonitors: true, enter: stateStarting,
		prepare: func() error {
			h.st.Name, h.st.Epoch, h.st.Resources, h.st.Active = cmd.Hierarchy, cmd.Epoch, cmd.Resources, true
			h.units = r.unitsLocked(h, cmd.Resources)
			h.health, h.restarts, h.restartedAt = map[string]*resHealth{}, map[string][]time.Time{}, map[string]time.Time{}
			return nil
		},
		run: func(ctx context.Context, e *executor, units []*unit) outcome { return e.bringUp(ctx, units) },
		finish: func(o outcome) {
			if o.OK {
				if r.transitionLocked(h, stateInService, "") == nil {
					h.cmdEpoch = cmd.Epoch
					r.startMonitorsLocked(h)
				}
			} else {
				h.st.Active = !o.Clean
				_ = r.transitionLocked(h, stateFailed, o.Detail)
			}
		},
	})
	return o
}

func (r *runner) takeOutOfService(h *localHierarchy, cmd *envelope.Command) outcome {
	o, _ := r.operate(h, opSpec{
		name: string(cmd.Action), cmd: cmd, stopMonitors: true, enter: stateStopping,
		prepare: func() error {
			if cmd.Epoch > h.st.Epoch {
				h.st.Epoch = cmd.Epoch
			}
			if cmd.Hierarchy != "" {
				h.st.Name = cmd.Hierarchy
			}
			if len(cmd.Resources) > 0 {
				h.st.Resources = cmd.Resources
				h.units = r.unitsLocked(h, cmd.Resources)
			} else if len(h.units) != len(h.st.Resources) {
				h.units = r.unitsLocked(h, h.st.Resources)
			}
			return nil
		},
		run: func(ctx context.Context, e *executor, units []*unit) outcome { return e.takeDown(ctx, units) },
		finish: func(o outcome) {
			if o.OK {
				h.st.Active = false
				_ = r.transitionLocked(h, stateOutOfService, "")
			} else {
				_ = r.transitionLocked(h, stateFailed, o.Detail)
			}
		},
	})
	return o
}

// changeResource runs restart_resource and move_ip, which act on a
// hierarchy in service here and leave it in service: if a step fails, the
// monitors notice what is broken and recover or fail the hierarchy.
func (r *runner) changeResource(h *localHierarchy, cmd *envelope.Command) outcome {
	o, _ := r.operate(h, opSpec{
		name: string(cmd.Action), cmd: cmd, from: []placement{stateInService},
		prepare: func() error {
			if cmd.Epoch > h.st.Epoch {
				h.st.Epoch = cmd.Epoch
			}
			return nil
		},
		run: func(ctx context.Context, e *executor, units []*unit) outcome {
			if cmd.Action == envelope.MoveIP {
				return e.moveIP(ctx, units, cmd.Target, cmd.Interface)
			}
			return e.restart(ctx, units, cmd.Target)
		},
		finish: func(o outcome) { r.recordRestartsLocked(h, o) },
	})
	return o
}

// recordRestartsLocked notes when resources were (re)started, so that a
// failed check that began before is known stale.
func (r *runner) recordRestartsLocked(h *localHierarchy, o outcome) {
	now := r.now()
	for _, s := range o.Steps {
		if s.OK && (s.Action == actionStart || s.Action == actionRestart) {
			h.restartedAt[s.Resource] = now
		}
	}
}

func joinDetail(a, b string) string {
	if b == "" {
		return a
	}
	return truncate(a+"; "+b, maxDetail)
}

// activeIDs returns the hierarchies that may have resources running here.
func (r *runner) activeIDs() []string {
	var ids []string
	for _, h := range r.list() {
		h.mu.Lock()
		if h.st.Active {
			ids = append(ids, h.id)
		}
		h.mu.Unlock()
	}
	return ids
}

// fenceResult is what fence did.
type fenceResult struct {
	Hierarchies []string
	Failures    []string
	Took        time.Duration
}

// fence removes every active hierarchy at once: it preempts their running
// operations and monitors (preemptLocked), then calls Fence on each
// resource in reverse order, all hierarchies in parallel, without waiting
// for any lock (a command may be blocked in a kit call; fencing must not
// wait for it). Fenced hierarchies become out of service, or failed when a
// Fence call failed (they stay active, so the next round fences them
// again); a hierarchy preempted again meanwhile is recorded by that later
// preemption instead.
func (r *runner) fence(reason string) fenceResult {
	start := time.Now()
	type job struct {
		h     *localHierarchy
		gen   uint64
		units []*unit
		errs  []string
	}
	var jobs []*job
	for _, h := range r.list() {
		h.mu.Lock()
		if h.st.Active {
			gen := r.preemptLocked(h, true)
			jobs = append(jobs, &job{h: h, gen: gen, units: h.units})
		}
		h.mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := len(j.units) - 1; i >= 0; i-- {
				u := j.units[i]
				if u.inst == nil {
					continue
				}
				if err := u.inst.Fence(); err != nil {
					j.errs = append(j.errs, fmt.Sprintf("%s: %v", u.res.Name, err))
				}
			}
		}()
	}
	wg.Wait()
	res := fenceResult{Took: time.Since(start)}
	for _, j := range jobs {
		h := j.h
		res.Hierarchies = append(res.Hierarchies, h.id)
		var d string
		if len(j.errs) > 0 {
			d = truncate(fmt.Sprintf("fence failed: %v", j.errs), maxDetail)
			res.Failures = append(res.Failures, h.id+": "+d)
		}
		h.mu.Lock()
		if h.gen == j.gen {
			if d == "" {
				h.st.Active = false
				_ = r.transitionLocked(h, stateOutOfService, "fenced: "+reason)
			} else {
				h.st.Active = true
				_ = r.transitionLocked(h, stateFailed, d)
			}
		}
		h.mu.Unlock()
	}
	if len(jobs) > 0 {
		r.save()
	}
	return res
}

// reports returns the hierarchy reports and resource health of a
// heartbeat. known are hierarchies of the configuration: those never
// touched here are reported out of service at the newest epoch accepted.
func (r *runner) reports(known []string, epochOf func(string) int64) ([]client.HierarchyReport, []client.ResourceHealth) {
	now := r.now()
	var hr []client.HierarchyReport
	var rh []client.ResourceHealth
	seen := map[string]bool{}
	for _, h := range r.list() {
		id, err := uuid.Parse(h.id)
		if err != nil {
			continue
		}
		seen[h.id] = true
		h.mu.Lock()
		rep := client.HierarchyReport{HierarchyId: id, Epoch: max(h.st.Epoch, 0), State: client.PlacementState(h.st.State)}
		if h.st.Detail != "" {
			d := truncate(h.st.Detail, maxDetail)
			rep.Detail = &d
		}
		hr = append(hr, rep)
		if h.st.State == stateInService || (h.st.State == stateFailed && len(h.health) > 0) {
			for _, u := range h.units {
				rh = append(rh, h.healthLocked(id, u.res, now))
			}
		}
		h.mu.Unlock()
	}
	for _, k := range known {
		if seen[k] {
			continue
		}
		if id, err := uuid.Parse(k); err == nil {
			hr = append(hr, client.HierarchyReport{HierarchyId: id, Epoch: max(epochOf(k), 0), State: client.PlacementStateOutOfService})
		}
	}
	return hr, rh
}

func (h *localHierarchy) healthLocked(id uuid.UUID, res backstop.Resource, now time.Time) client.ResourceHealth {
	out := client.ResourceHealth{HierarchyId: id, Resource: res.Name}
	restarts := len(pruneRestarts(h.restarts[res.Name], now, localRecovery(res)))
	out.Restarts = &restarts
	hl := h.health[res.Name]
	if hl == nil {
		zero := int64(0)
		out.CheckFailures = &zero
		return out
	}
	f := hl.failures
	out.CheckFailures = &f
	conv := func(c *checkResult) *client.CheckResult {
		if c == nil {
			return nil
		}
		cr := &client.CheckResult{Ok: c.OK, At: c.At.UTC()}
		if c.Detail != "" {
			d := truncate(c.Detail, maxDetail)
			cr.Detail = &d
		}
		return cr
	}
	out.Quick, out.Deep = conv(hl.quick), conv(hl.deep)
	return out
}

// relinquish takes a hierarchy this node runs out of service because the
// control plane placed it elsewhere (or at a newer epoch) while this node
// was cut off: stop in reverse order, never start anything. It preempts
// what runs on the hierarchy, then takes it down through the bracket, which
// gives up if a fencing or a newer command got there first.
func (r *runner) relinquish(h *localHierarchy, why string) {
	h.mu.Lock()
	if !h.st.Active && h.st.State != stateInService {
		h.mu.Unlock()
		return
	}
	if err := canTransition(h.st.State, stateStopping); err != nil {
		h.mu.Unlock()
		r.hlog(h).Error("cannot relinquish the hierarchy", keyErr, err, keyDetail, why)
		return
	}
	gen := r.preemptLocked(h, false)
	if len(h.units) != len(h.st.Resources) {
		h.units = r.unitsLocked(h, h.st.Resources)
	}
	_ = r.transitionLocked(h, stateStopping, why)
	h.mu.Unlock()
	r.save()
	r.hlog(h).Warn("taking the hierarchy out of service here: "+why, keyEvent, eventRelinquished, keyDetail, why)

	h.ops.Lock()
	defer h.ops.Unlock()
	if _, err := r.operate(h, opSpec{
		name: "relinquish", from: []placement{stateStopping}, gen: gen, hasGen: true,
		run: func(ctx context.Context, e *executor, units []*unit) outcome { return e.takeDown(ctx, units) },
		finish: func(o outcome) {
			h.st.Active = !o.Clean
			if o.OK {
				_ = r.transitionLocked(h, stateOutOfService, why)
			} else {
				_ = r.transitionLocked(h, stateFailed, joinDetail(why, "take-down: "+o.Detail))
			}
		},
	}); err != nil {
		r.hlog(h).Info("relinquish given up: "+err.Error(), keyEvent, eventRelinquished, keyDetail, why)
	}
}
