package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/openapi/envelope"
	"github.com/backstop-ha/backstop/server/cluster"
)

// hierState is the local state of one hierarchy on this node, persisted in
// hierarchies.json so that a restarted agent resumes monitoring what it
// runs and still knows what to fence.
type hierState struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	State string `json:"state"`
	Epoch int64  `json:"epoch"`
	// Detail says why the state is what it is (for failed, what failed).
	Detail string `json:"detail,omitempty"`
	// Active is true while any resource may be running here: from the
	// first start until a take-down, rollback or fencing that fully
	// succeeded. Fencing targets active hierarchies.
	Active bool `json:"active"`
	// Resources are those of the last command, in bring-up order.
	Resources []cluster.Resource `json:"resources"`
	UpdatedAt time.Time          `json:"updated_at"`
}

// hierarchy is one hierarchy's runtime: its state, kit instances,
// monitors and health.
type hierarchy struct {
	id string
	// ops is held for writing by commands, local recovery and the
	// take-down of a failed hierarchy, and for reading by checks: a check
	// never runs while the hierarchy changes (it would see a resource
	// stopped on purpose), and two changes never overlap.
	ops sync.RWMutex

	// mu guards the fields below.
	mu    sync.Mutex
	st    hierState
	units []*unit
	// cancelOp cancels the running command or recovery (fencing does).
	cancelOp context.CancelFunc
	// gen increases when the hierarchy is fenced: an operation that
	// started before must not record its outcome over the fencing.
	gen uint64
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
	newInstance func(cluster.Resource, kit.Env) (kit.Instance, error)
	log         *slog.Logger
	exec        *executor
	met         *metrics
	// timing returns the current timing (it changes live).
	timing func() cluster.Timing
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

	// saveMu serializes writes of hierarchies.json.
	saveMu sync.Mutex
	// mu guards hs.
	mu sync.Mutex
	hs map[string]*hierarchy
}

func newRunner(dir string, newInstance func(cluster.Resource, kit.Env) (kit.Instance, error), log *slog.Logger, met *metrics, timing func() cluster.Timing, stepTimeout time.Duration) *runner {
	if newInstance == nil {
		newInstance = kit.New
	}
	return &runner{
		dir: dir, newInstance: newInstance, log: log, met: met, timing: timing, now: time.Now,
		exec: &executor{log: log, stepTimeout: stepTimeout},
		base: context.Background(), monBase: context.Background(),
		hs: map[string]*hierarchy{},
	}
}

func newHierarchy(id string) *hierarchy {
	return &hierarchy{id: id, st: hierState{ID: id, State: cluster.PlacementOutOfService},
		health: map[string]*resHealth{}, restarts: map[string][]time.Time{}, restartedAt: map[string]time.Time{}}
}

// get returns the hierarchy id, creating it out of service.
func (r *runner) get(id string) *hierarchy {
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
func (r *runner) list() []*hierarchy {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*hierarchy, 0, len(r.hs))
	for _, h := range r.hs {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// hlog returns the logger of a hierarchy.
func (r *runner) hlog(h *hierarchy) *slog.Logger {
	return r.log.With(keyHierarchy, h.id, keyHierarchyName, h.st.Name)
}

// load reads hierarchies.json. Hierarchies the previous agent process left
// half changed (starting, stopping) become failed: whether their resources
// run is unknown, so they stay active (fenceable) and unmonitored until a
// command settles them.
func (r *runner) load() error {
	var list []hierState
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
		if st.State == cluster.PlacementStarting || st.State == cluster.PlacementStopping {
			st.Detail = fmt.Sprintf("the agent restarted while the hierarchy was %s", st.State)
			st.State = cluster.PlacementFailed
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
		if h.st.State == cluster.PlacementInService {
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
func (r *runner) unitsLocked(h *hierarchy, resources []cluster.Resource) []*unit {
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
				u.inst, u.err = r.newInstance(res, kit.Env{StateDir: dir,
					Log: r.log.With(keyHierarchy, h.id, keyResource, res.Name, "kit", res.Kind)})
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
	list := make([]hierState, 0, len(hs))
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
func (r *runner) execFor(h *hierarchy, cmd *envelope.Command) *executor {
	log := r.log.With(keyHierarchy, h.id)
	if cmd != nil {
		log = log.With(keyCommand, cmd.ID)
	}
	return &executor{log: log, stepTimeout: r.exec.stepTimeout}
}

// setStateLocked changes the state and logs it.
func (r *runner) setStateLocked(h *hierarchy, state, detail string) {
	h.st.State, h.st.Detail, h.st.UpdatedAt = state, detail, r.now()
	lvl := slog.LevelInfo
	if state == cluster.PlacementFailed {
		lvl = slog.LevelWarn
	}
	r.hlog(h).Log(context.Background(), lvl, "hierarchy state", keyEvent, eventHierarchyState,
		keyState, state, keyEpoch, h.st.Epoch, "active", h.st.Active, keyDetail, detail)
}

// beginOpLocked registers a running operation under h.mu; the returned context
// is cancelled by fencing.
func (r *runner) beginOpLocked(h *hierarchy) (context.Context, uint64) {
	ctx, cancel := context.WithCancel(r.base)
	h.cancelOp = cancel
	return ctx, h.gen
}

func (r *runner) endOpLocked(h *hierarchy) {
	if h.cancelOp != nil {
		h.cancelOp()
		h.cancelOp = nil
	}
}

// fencedDetail is the detail of operations overtaken by fencing.
const fencedDetail = "the node fenced itself while the command ran"

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

func (r *runner) bringInService(h *hierarchy, cmd *envelope.Command) outcome {
	h.mu.Lock()
	r.stopMonitorsLocked(h)
	h.st.Name, h.st.Epoch, h.st.Resources, h.st.Active = cmd.Hierarchy, cmd.Epoch, cmd.Resources, true
	h.units = r.unitsLocked(h, cmd.Resources)
	h.health, h.restarts, h.restartedAt = map[string]*resHealth{}, map[string][]time.Time{}, map[string]time.Time{}
	r.setStateLocked(h, cluster.PlacementStarting, "")
	ctx, gen := r.beginOpLocked(h)
	units := h.units
	h.mu.Unlock()
	r.save()

	o := r.execFor(h, cmd).bringUp(ctx, units)

	h.mu.Lock()
	r.endOpLocked(h)
	if h.gen != gen {
		h.mu.Unlock()
		o.OK, o.Detail = false, joinDetail(fencedDetail, o.Detail)
		return o
	}
	if o.OK {
		h.cmdEpoch = cmd.Epoch
		r.setStateLocked(h, cluster.PlacementInService, "")
		r.startMonitorsLocked(h)
	} else {
		h.st.Active = !o.Clean
		r.setStateLocked(h, cluster.PlacementFailed, o.Detail)
	}
	h.mu.Unlock()
	r.save()
	return o
}

func (r *runner) takeOutOfService(h *hierarchy, cmd *envelope.Command) outcome {
	h.mu.Lock()
	r.stopMonitorsLocked(h)
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
	r.setStateLocked(h, cluster.PlacementStopping, "")
	ctx, gen := r.beginOpLocked(h)
	units := h.units
	h.mu.Unlock()
	r.save()

	o := r.execFor(h, cmd).takeDown(ctx, units)

	h.mu.Lock()
	r.endOpLocked(h)
	if h.gen != gen {
		h.mu.Unlock()
		o.OK, o.Detail = false, joinDetail(fencedDetail, o.Detail)
		return o
	}
	if o.OK {
		h.st.Active = false
		r.setStateLocked(h, cluster.PlacementOutOfService, "")
	} else {
		r.setStateLocked(h, cluster.PlacementFailed, o.Detail)
	}
	h.mu.Unlock()
	r.save()
	return o
}

// changeResource runs restart_resource and move_ip, which act on a
// hierarchy in service here and leave it in service: if a step fails, the
// monitors notice what is broken and recover or fail the hierarchy.
func (r *runner) changeResource(h *hierarchy, cmd *envelope.Command) outcome {
	h.mu.Lock()
	if h.st.State != cluster.PlacementInService {
		st := h.st.State
		h.mu.Unlock()
		return outcome{Detail: fmt.Sprintf("%s needs the hierarchy in service on this node; it is %s", cmd.Action, st)}
	}
	if cmd.Epoch > h.st.Epoch {
		h.st.Epoch = cmd.Epoch
	}
	ctx, gen := r.beginOpLocked(h)
	units := h.units
	h.mu.Unlock()

	var o outcome
	if cmd.Action == envelope.MoveIP {
		o = r.execFor(h, cmd).moveIP(ctx, units, cmd.Target, cmd.Interface)
	} else {
		o = r.execFor(h, cmd).restart(ctx, units, cmd.Target)
	}

	h.mu.Lock()
	r.endOpLocked(h)
	if h.gen != gen {
		o.OK, o.Detail = false, joinDetail(fencedDetail, o.Detail)
	}
	now := r.now()
	for _, s := range o.Steps {
		if s.OK && (s.Action == actionStart || s.Action == actionRestart) {
			h.restartedAt[s.Resource] = now
		}
	}
	h.mu.Unlock()
	r.save()
	return o
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

// fence removes every active hierarchy at once: it cancels their running
// operations and monitors, then calls Fence on each resource in reverse
// order, all hierarchies in parallel, without waiting for any lock (a
// command may be blocked in a kit call; fencing must not wait for it).
// Fenced hierarchies become out of service, or failed when a Fence call
// failed (they stay active, so the next round fences them again).
func (r *runner) fence(reason string) fenceResult {
	start := time.Now()
	type job struct {
		h     *hierarchy
		units []*unit
		errs  []string
	}
	var jobs []*job
	for _, h := range r.list() {
		h.mu.Lock()
		if h.st.Active {
			h.gen++
			if h.cancelOp != nil {
				h.cancelOp()
			}
			r.stopMonitorsLocked(h)
			jobs = append(jobs, &job{h: h, units: h.units})
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
		h.mu.Lock()
		if len(j.errs) == 0 {
			h.st.Active = false
			r.setStateLocked(h, cluster.PlacementOutOfService, "fenced: "+reason)
		} else {
			d := truncate(fmt.Sprintf("fence failed: %v", j.errs), maxDetail)
			res.Failures = append(res.Failures, h.id+": "+d)
			r.setStateLocked(h, cluster.PlacementFailed, d)
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
		if h.st.State == cluster.PlacementInService || (h.st.State == cluster.PlacementFailed && len(h.health) > 0) {
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

func (h *hierarchy) healthLocked(id uuid.UUID, res cluster.Resource, now time.Time) client.ResourceHealth {
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
// was cut off: stop in reverse order, never start anything.
func (r *runner) relinquish(h *hierarchy, why string) {
	h.mu.Lock()
	if !h.st.Active && h.st.State != cluster.PlacementInService {
		h.mu.Unlock()
		return
	}
	h.gen++
	if h.cancelOp != nil {
		h.cancelOp()
	}
	r.stopMonitorsLocked(h)
	if len(h.units) != len(h.st.Resources) {
		h.units = r.unitsLocked(h, h.st.Resources)
	}
	units := h.units
	r.setStateLocked(h, cluster.PlacementStopping, why)
	h.mu.Unlock()
	r.save()
	r.hlog(h).Warn("taking the hierarchy out of service here: "+why, keyEvent, eventRelinquished, keyDetail, why)

	h.ops.Lock()
	o := r.execFor(h, nil).takeDown(r.base, units)
	h.ops.Unlock()

	h.mu.Lock()
	h.st.Active = !o.Clean
	if o.OK {
		r.setStateLocked(h, cluster.PlacementOutOfService, why)
	} else {
		r.setStateLocked(h, cluster.PlacementFailed, joinDetail(why, "take-down: "+o.Detail))
	}
	h.mu.Unlock()
	r.save()
}
