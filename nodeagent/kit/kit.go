// Package kit holds Backstop's resource kits: the code that brings one
// resource of a hierarchy in and out of service on this node, checks it,
// and fences it. Each kind of the design brief (ip, volume, service, ocf,
// and the check-only tcp, http, smtp, command) has one implementation.
package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/backstop-ha/backstop"
)

// Env is what an instance may use on this node.
type Env struct {
	// StateDir is a private directory of this resource (pid files, probe
	// files); it exists and survives agent restarts.
	StateDir string
	// Log is the resource's logger.
	Log *slog.Logger
	// Config keeps the versions of a files resource at the control
	// plane; nil for other kinds (and where there is no control plane).
	Config ConfigStore
}

// Instance manages one resource on this node. Methods are called by one
// goroutine at a time per instance.
type Instance interface {
	// Start brings the resource in service. Starting a resource already
	// in service succeeds.
	Start(ctx context.Context) error
	// Stop takes the resource out of service. Stopping one not in service
	// succeeds.
	Stop(ctx context.Context) error
	// Check runs the quick check, or the deep check when deep is true.
	// It returns nil when healthy; ErrNotRunning when the resource is
	// simply not in service; another error, saying what failed, otherwise.
	Check(ctx context.Context, deep bool) error
	// Fence removes the resource at once, without an orderly stop: kill
	// its processes, delete its address, force-unmount its volume. It is
	// called when the node lost its lease in isolation and must take
	// milliseconds, not seconds.
	Fence() error
}

// ErrNotRunning reports a resource that is cleanly not in service (OCF
// exit code 7).
var ErrNotRunning = errors.New("not running")

// New returns the instance for r, after checking its parameters.
func New(r backstop.Resource, env Env) (Instance, error) {
	f, ok := kinds[r.Kind]
	if !ok {
		return nil, fmt.Errorf("resource %q: unknown kind %q", r.Name, r.Kind)
	}
	return f(r, env)
}

// kinds maps each kind to its constructor; each kit registers itself.
var kinds = map[string]func(backstop.Resource, Env) (Instance, error){}
