package servertest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
)

// errCrashed is what a crashed node's kit answers: its machine is off.
var errCrashed = errors.New("servertest: the node crashed")

// world is what every fake kit of a harness shares: which resource of
// which hierarchy runs on which node. One mutex guards it all, so that the
// never-two-copies oracle sees each start atomically with every other
// node's state: it is exact, not a sample.
type world struct {
	mu sync.Mutex
	// running: hierarchy id -> node index -> resource name -> running.
	running  map[string]map[int]map[string]bool
	overlaps []Overlap
	// names maps hierarchy ids to the names tests use (for messages).
	names map[string]string
}

func newWorld() *world {
	return &world{running: map[string]map[int]map[string]bool{}, names: map[string]string{}}
}

// Overlap is a violation of "never two copies": at At, starting Resource
// on node Started made hierarchy Hierarchy run on every node of Nodes.
type Overlap struct {
	Hierarchy string
	Resource  string
	Started   int
	Nodes     []int
	At        time.Time
}

func (o Overlap) String() string {
	return fmt.Sprintf("%s: starting %s on node %d made it run on nodes %v at %s",
		o.Hierarchy, o.Resource, o.Started, o.Nodes, o.At.Format("15:04:05.000"))
}

// setLocked records resource res of hierarchy hid running (or not) on
// node, and an overlap when that makes two nodes run the hierarchy.
func (w *world) setLocked(hid string, node int, res string, on bool) {
	byNode := w.running[hid]
	if byNode == nil {
		byNode = map[int]map[string]bool{}
		w.running[hid] = byNode
	}
	rs := byNode[node]
	if rs == nil {
		rs = map[string]bool{}
		byNode[node] = rs
	}
	if !on {
		delete(rs, res)
		return
	}
	rs[res] = true
	if nodes := w.nodesLocked(hid); len(nodes) > 1 {
		name := hid
		if n, ok := w.names[hid]; ok {
			name = n
		}
		w.overlaps = append(w.overlaps, Overlap{Hierarchy: name, Resource: res, Started: node, Nodes: nodes, At: time.Now()})
	}
}

// nodesLocked returns the nodes running at least one resource of hid.
func (w *world) nodesLocked(hid string) []int {
	var nodes []int
	for n, rs := range w.running[hid] {
		if len(rs) > 0 {
			nodes = append(nodes, n)
		}
	}
	slices.Sort(nodes)
	return nodes
}

// runningOn returns the resources of hid running on node.
func (w *world) runningOn(hid string, node int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for r := range w.running[hid][node] {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// nodes returns the nodes running at least one resource of hid.
func (w *world) nodes(hid string) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nodesLocked(hid)
}

func (w *world) overlapList() []Overlap {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.overlaps)
}

// Kit is one node's fake resource kits: every kind is an in-memory
// instance that records whether it runs (in the harness's shared world).
// Tests make its checks or starts fail; Fence stops an instance at once,
// as a real kit kills its processes.
type Kit struct {
	w    *world
	node int

	// The fields below are guarded by w.mu.
	crashed  bool
	checkErr map[resKey]error
	startErr map[resKey]error
	insts    map[resKey]*instance
	starts   map[resKey]int
}

type resKey struct{ hierarchy, resource string }

func newKit(w *world, node int) *Kit {
	return &Kit{w: w, node: node, checkErr: map[resKey]error{}, startErr: map[resKey]error{},
		insts: map[resKey]*instance{}, starts: map[resKey]int{}}
}

// newInstance is the agent's kit.New. The hierarchy's id is the parent
// of the resource's state directory (<data>/resources/<hierarchy>/<name>).
// An instance is made once per resource and reused, so that its state
// survives an agent restart as a process would.
func (k *Kit) newInstance(r backstop.Resource, env kit.Env) (kit.Instance, error) {
	if env.StateDir == "" {
		return nil, errors.New("servertest: no state directory")
	}
	key := resKey{filepath.Base(filepath.Dir(env.StateDir)), r.Name}
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	in := k.insts[key]
	if in == nil {
		in = &instance{k: k, key: key}
		k.insts[key] = in
	}
	return in, nil
}

// FailChecks makes every check of resource res of hierarchy hid fail with
// err (nil: a generic error) until HealChecks.
func (k *Kit) FailChecks(hid, res string, err error) { k.inject(k.checkErr, hid, res, err, "check") }

// HealChecks undoes FailChecks.
func (k *Kit) HealChecks(hid, res string) { k.inject(k.checkErr, hid, res, nil, "") }

// FailStarts makes every start of resource res of hierarchy hid fail with
// err (nil: a generic error) until HealStarts.
func (k *Kit) FailStarts(hid, res string, err error) { k.inject(k.startErr, hid, res, err, "start") }

// HealStarts undoes FailStarts.
func (k *Kit) HealStarts(hid, res string) { k.inject(k.startErr, hid, res, nil, "") }

// inject sets the failure of what (check or start) in m, or clears it
// when what is "".
func (k *Kit) inject(m map[resKey]error, hid, res string, err error, what string) {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	if what == "" {
		delete(m, resKey{hid, res})
		return
	}
	if err == nil {
		err = fmt.Errorf("%s: injected %s failure", res, what)
	}
	m[resKey{hid, res}] = err
}

// Starts returns how many times resource res of hierarchy hid was
// started on this node (successfully or not).
func (k *Kit) Starts(hid, res string) int {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	return k.starts[resKey{hid, res}]
}

// Running returns the resources of hierarchy hid running on this node.
func (k *Kit) Running(hid string) []string { return k.w.runningOn(hid, k.node) }

// crash stops every instance of the node at once and refuses any start
// from now on: the machine is off.
func (k *Kit) crash() {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	k.crashed = true
	for key, in := range k.insts {
		in.running = false
		k.w.setLocked(key.hierarchy, k.node, key.resource, false)
	}
}

// instance is one fake resource on one node.
type instance struct {
	k   *Kit
	key resKey
	// running is guarded by k.w.mu.
	running bool
}

func (i *instance) set(on bool) {
	i.running = on
	i.k.w.setLocked(i.key.hierarchy, i.k.node, i.key.resource, on)
}

func (i *instance) Start(ctx context.Context) error {
	w := i.k.w
	w.mu.Lock()
	defer w.mu.Unlock()
	i.k.starts[i.key]++
	if i.k.crashed {
		return errCrashed
	}
	if err := i.k.startErr[i.key]; err != nil {
		return err
	}
	i.set(true)
	return nil
}

func (i *instance) Stop(ctx context.Context) error {
	w := i.k.w
	w.mu.Lock()
	defer w.mu.Unlock()
	i.set(false)
	return nil
}

func (i *instance) Check(ctx context.Context, deep bool) error {
	w := i.k.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if !i.running {
		return fmt.Errorf("%s: %w", i.key.resource, kit.ErrNotRunning)
	}
	if err := i.k.checkErr[i.key]; err != nil {
		return err
	}
	return nil
}

func (i *instance) Fence() error {
	w := i.k.w
	w.mu.Lock()
	defer w.mu.Unlock()
	i.set(false)
	return nil
}

// reboot lets a crashed node start resources again; nothing runs on it.
func (k *Kit) reboot() {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	k.crashed = false
}
