package failover

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/backstop-ha/backstop"
)

// Fencer powers a node off through its fence device and returns nil
// only once the device confirmed it off (package fencing).
type Fencer interface {
	Fence(ctx context.Context, d backstop.FenceDevice) error
}

// Fence retry backoff: the first retry after fenceBackoffMin, doubling
// up to fenceBackoffMax.
const (
	fenceBackoffMin = time.Second
	fenceBackoffMax = 30 * time.Second
)

// fences tracks the fences under way, one per node.
type fences struct {
	// mu guards the fields below.
	mu      sync.Mutex
	running map[string]bool // node id
}

// startFences starts a fence for every node awaiting one that has none
// under way. Each runs in a goroutine of its own, so a slow or dead
// fence device holds up neither the engine's pass nor the other
// clusters, and different nodes are fenced in parallel; one node is
// never fenced twice at once. The goroutines end with ctx (leadership
// lost) or once the node no longer awaits a fence.
func (e *Engine) startFences(ctx context.Context, term int64, sts []backstop.ClusterStatus) error {
	if e.Fencer == nil {
		return nil
	}
	want := false
	for _, st := range sts {
		for _, n := range st.Nodes {
			if n.AwaitingFence && !e.fenceRunning(n.ID) {
				want = true
			}
		}
	}
	if !want {
		return nil
	}
	jobs, err := e.Store.FenceJobs(ctx)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		e.fences.mu.Lock()
		if e.fences.running == nil {
			e.fences.running = map[string]bool{}
		}
		busy := e.fences.running[j.Device.NodeID]
		e.fences.running[j.Device.NodeID] = true
		e.fences.mu.Unlock()
		if !busy {
			go e.fenceLoop(ctx, term, j)
		}
	}
	return nil
}

func (e *Engine) fenceRunning(nodeID string) bool {
	e.fences.mu.Lock()
	defer e.fences.mu.Unlock()
	return e.fences.running[nodeID]
}

// fenceLoop fences one node until a fence is confirmed, the node no
// longer awaits one (it came back, or its device was removed), or ctx
// ends. Each failure is a fence.failed event; the device is read again
// before each retry, so a fixed configuration is used at once.
func (e *Engine) fenceLoop(ctx context.Context, term int64, j backstop.FenceJob) {
	node := j.Device.NodeID
	defer func() {
		e.fences.mu.Lock()
		delete(e.fences.running, node)
		e.fences.mu.Unlock()
	}()
	backoff := fenceBackoffMin
	for attempt := 1; ; attempt++ {
		e.Log.WarnContext(ctx, "fencing node", "node", j.NodeName, "node_id", node, "agent", j.Device.Agent, "attempt", attempt)
		start := time.Now()
		err := e.Fencer.Fence(ctx, j.Device)
		if ctx.Err() != nil {
			return // leadership lost or shutdown: the next leader fences
		}
		res := backstop.FenceResult{ClusterID: j.Device.ClusterID, NodeID: node, NodeName: j.NodeName, DownSince: j.DownSince,
			OK: err == nil, Agent: j.Device.Agent, Duration: time.Since(start), Attempt: attempt}
		if err != nil {
			res.Detail = err.Error()
			e.Log.ErrorContext(ctx, "fence failed", "node", j.NodeName, "node_id", node, "agent", j.Device.Agent, "attempt", attempt, "err", err)
		} else {
			e.Log.WarnContext(ctx, "node fenced", "node", j.NodeName, "node_id", node, "agent", j.Device.Agent, "duration", res.Duration)
		}
		if e.OnFence != nil {
			e.OnFence(res)
		}
		rerr := e.Store.RecordFence(ctx, term, res)
		switch {
		case errors.Is(rerr, backstop.ErrStaleTerm):
			return
		case rerr != nil:
			e.Log.WarnContext(ctx, "record fence", "node_id", node, "err", rerr)
		case res.OK:
			e.wakeUp() // the node's hierarchies may move now
			return
		}
		if res.OK {
			// Fenced, but not recorded: fence again (an off node is
			// "Already OFF" at once) and record that.
			backoff = fenceBackoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, fenceBackoffMax)
		next, ok, err := e.fenceJob(ctx, node)
		if err != nil {
			e.Log.WarnContext(ctx, "read fence job", "node_id", node, "err", err)
			continue // try again with what we had
		}
		if !ok || !next.DownSince.Equal(j.DownSince) {
			return // no longer awaiting this fence; a new episode gets a loop of its own
		}
		j = next
	}
}

func (e *Engine) fenceJob(ctx context.Context, nodeID string) (backstop.FenceJob, bool, error) {
	jobs, err := e.Store.FenceJobs(ctx)
	if err != nil {
		return backstop.FenceJob{}, false, err
	}
	for _, j := range jobs {
		if j.Device.NodeID == nodeID {
			return j, true, nil
		}
	}
	return backstop.FenceJob{}, false, nil
}

// wakeUp makes the engine run its next pass now.
func (e *Engine) wakeUp() {
	select {
	case e.wake() <- struct{}{}:
	default:
	}
}

func (e *Engine) wake() chan struct{} {
	e.wakeOnce.Do(func() { e.wakeCh = make(chan struct{}, 1) })
	return e.wakeCh
}
