package nslab

import (
	"fmt"
	"sync"
	"time"
)

// Invariant samples, every few milliseconds until stopped, which nodes
// hold a virtual IP and which listen on its service port, and counts the
// samples where two nodes do (never-two-copies violated). Samples are
// counted per phase, a label the caller sets (e.g. "fault", "restore").
type Invariant struct {
	top  *Topology
	addr string
	port int

	mu         sync.Mutex
	excluded   map[int]bool
	phase      string
	samples    map[string]int
	violations map[string]int
	first      map[string]string
	stop, done chan struct{}
}

// WatchInvariant starts sampling addr and addr:port every `every`.
func WatchInvariant(top *Topology, addr string, port int, every time.Duration) *Invariant {
	inv := &Invariant{top: top, addr: addr, port: port, excluded: map[int]bool{},
		samples: map[string]int{}, violations: map[string]int{}, first: map[string]string{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(inv.done)
		for {
			select {
			case <-inv.stop:
				return
			default:
			}
			holders := inv.live(top.Holders(addr))
			running := inv.live(top.Listeners(addr, port))
			inv.mu.Lock()
			inv.samples[inv.phase]++
			if len(holders) > 1 || len(running) > 1 {
				inv.violations[inv.phase]++
				if inv.first[inv.phase] == "" {
					inv.first[inv.phase] = fmt.Sprintf("at %s: address held by nodes %v, port %d open on nodes %v (indexes from 0)",
						time.Now().Format("15:04:05.000"), holders, port, running)
				}
			}
			inv.mu.Unlock()
			time.Sleep(every)
		}
	}()
	return inv
}

func (inv *Invariant) live(nodes []int) []int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := nodes[:0:0]
	for _, i := range nodes {
		if !inv.excluded[i] {
			out = append(out, i)
		}
	}
	return out
}

// Exclude stops counting node i (it crashed: what its namespace still
// holds would be gone with a real machine); Include counts it again.
func (inv *Invariant) Exclude(i int) { inv.mu.Lock(); inv.excluded[i] = true; inv.mu.Unlock() }

// Include counts node i again.
func (inv *Invariant) Include(i int) { inv.mu.Lock(); delete(inv.excluded, i); inv.mu.Unlock() }

// SetPhase labels the following samples.
func (inv *Invariant) SetPhase(p string) { inv.mu.Lock(); inv.phase = p; inv.mu.Unlock() }

// Counts returns the samples and violations of a phase so far, and the
// first violation's description.
func (inv *Invariant) Counts(phase string) (samples, violations int, first string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.samples[phase], inv.violations[phase], inv.first[phase]
}

// Reset clears the counts of a phase.
func (inv *Invariant) Reset(phase string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	delete(inv.samples, phase)
	delete(inv.violations, phase)
	delete(inv.first, phase)
}

// Stop stops sampling (once) and waits for the sampler.
func (inv *Invariant) Stop() {
	select {
	case <-inv.done:
		return
	default:
	}
	select {
	case <-inv.stop:
	default:
		close(inv.stop)
	}
	<-inv.done
}
