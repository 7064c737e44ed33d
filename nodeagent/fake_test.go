package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
)

// fakeKits makes fake kit instances and records every call on them, in
// order, as "start vip", "stop svc", "check svc quick", "fence vol", ...
// An instance is made once per resource name and reused, so that its
// running state survives a new runner (as a real process would survive an
// agent restart).
type fakeKits struct {
	mu    sync.Mutex
	calls []string
	insts map[string]*fakeInst
	// newErr makes New fail for these resource names.
	newErr map[string]error
}

func newFakeKits() *fakeKits {
	return &fakeKits{insts: map[string]*fakeInst{}, newErr: map[string]error{}}
}

func (f *fakeKits) New(r backstop.Resource, env kit.Env) (kit.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.newErr[r.Name]; err != nil {
		return nil, err
	}
	if env.StateDir != "" {
		if _, err := os.Stat(env.StateDir); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	in, ok := f.insts[r.Name]
	if !ok {
		in = &fakeInst{f: f, name: r.Name, kind: r.Kind}
		f.insts[r.Name] = in
	}
	return in, nil
}

func (f *fakeKits) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

// take returns the calls so far (without checks, which run on their own
// schedule) and forgets them.
func (f *fakeKits) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "check ") {
			out = append(out, c)
		}
	}
	f.calls = nil
	return out
}

// count returns how many calls equal s.
func (f *fakeKits) count(s string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == s {
			n++
		}
	}
	return n
}

func (f *fakeKits) inst(name string) *fakeInst {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insts[name]
}

// fakeInst is a kit.Instance (and an IPMover) whose failures tests set.
type fakeInst struct {
	f    *fakeKits
	name string
	kind string

	// mu guards the fields below.
	mu       sync.Mutex
	running  bool
	iface    string
	startErr error
	stopErr  error
	checkErr error
	fenceErr error
	// blockStart makes Start wait for its context.
	blockStart bool
	started    chan struct{} // closed when a blocking Start began
	// gate, if set, makes Start wait until it is closed.
	gate chan struct{}
}

func (i *fakeInst) set(fn func(*fakeInst)) {
	i.mu.Lock()
	defer i.mu.Unlock()
	fn(i)
}

func (i *fakeInst) isRunning() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.running
}

func (i *fakeInst) Start(ctx context.Context) error {
	i.f.record("start " + i.name)
	i.mu.Lock()
	block, err, gate := i.blockStart, i.startErr, i.gate
	if block && i.started != nil {
		close(i.started)
		i.started = nil
	}
	i.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	i.set(func(i *fakeInst) { i.running = true })
	return nil
}

func (i *fakeInst) Stop(ctx context.Context) error {
	i.f.record("stop " + i.name)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopErr != nil {
		return i.stopErr
	}
	i.running = false
	return nil
}

func (i *fakeInst) Check(ctx context.Context, deep bool) error {
	i.f.record("check " + i.name + " " + checkName(deep))
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.checkErr != nil {
		return i.checkErr
	}
	if !i.running {
		return fmt.Errorf("%s: %w", i.name, kit.ErrNotRunning)
	}
	return nil
}

func (i *fakeInst) Fence() error {
	i.f.record("fence " + i.name)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.fenceErr != nil {
		return i.fenceErr
	}
	i.running = false
	return nil
}

func (i *fakeInst) MoveTo(ctx context.Context, iface string) error {
	i.f.record("move " + i.name + " " + iface)
	if i.kind != backstop.KindIP {
		return errors.New("not an ip")
	}
	i.set(func(i *fakeInst) { i.iface = iface })
	return nil
}

func kitEnv() kit.Env { return kit.Env{} }

// plainInst is an Instance without MoveTo.
type plainInst struct{ kit.Instance }

// testLogger logs to the test when -v is given, and discards otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// res builds a resource.
func res(name, kind string, deps ...string) backstop.Resource {
	return backstop.Resource{Name: name, Kind: kind, Params: map[string]any{}, DependsOn: deps}
}

func equalCalls(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("calls:\n got  %q\n want %q", got, want)
	}
}
