package nodeagent

import (
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/client"
)

// Hooks are the seams that tests of other packages need to run a real
// agent in-process (server/servertest runs several against one control
// plane): fake resource kits and an HTTP client they can cut. A zero
// field keeps what production uses. cmd/backstop-agent never sets them.
type Hooks struct {
	// NewInstance replaces kit.New: it makes the instance of a resource.
	// env.StateDir is <DataDir>/resources/<hierarchy id>/<resource name>.
	NewInstance func(backstop.Resource, kit.Env) (kit.Instance, error)
	// HTTPDoer carries every request to the control plane.
	HTTPDoer client.HttpRequestDoer
	// PollWait is the long poll's wait for commands (default 25 s): a
	// short one lets a stopped agent end without waiting for it.
	PollWait time.Duration
}

// NewWithHooks is New with test hooks; it is meant for tests only.
func NewWithHooks(cfg Config, h Hooks) (*Agent, error) {
	cfg.newInstance, cfg.httpDoer, cfg.pollWait = h.NewInstance, h.HTTPDoer, h.PollWait
	return New(cfg)
}
