package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/backstop-ha/backstop"
)

func init() { kinds[backstop.KindOCF] = newOCF }

// ocfRoot is OCF_ROOT, where resource-agents installs itself on Debian;
// agents are ocfRoot/resource.d/PROVIDER/TYPE.
var ocfRoot = "/usr/lib/ocf"

const (
	// ocfDefaultTimeout bounds an action when the caller's context has no
	// deadline (Pacemaker's default operation timeout).
	ocfDefaultTimeout = 20 * time.Second
	// ocfFenceTimeout bounds the stop that Fence runs.
	ocfFenceTimeout = time.Second
)

// OCF exit codes (OCF resource agent API 1.1, section "Exit codes").
const (
	ocfSuccess          = 0
	ocfErrGeneric       = 1
	ocfErrArgs          = 2
	ocfErrUnimplemented = 3
	ocfErrPerm          = 4
	ocfErrInstalled     = 5
	ocfErrConfigured    = 6
	ocfNotRunning       = 7
	ocfRunningPromoted  = 8
	ocfFailedPromoted   = 9
	ocfDegraded         = 190
	ocfDegradedPromoted = 191
	ocfTimedOut         = -1 // not an OCF code: the action was killed on timeout
	ocfCouldNotRun      = -2 // not an OCF code: the agent could not be run
)

var ocfCodeNames = map[int]string{
	ocfSuccess:          "OCF_SUCCESS",
	ocfErrGeneric:       "OCF_ERR_GENERIC: generic error",
	ocfErrArgs:          "OCF_ERR_ARGS: invalid arguments",
	ocfErrUnimplemented: "OCF_ERR_UNIMPLEMENTED: action not implemented",
	ocfErrPerm:          "OCF_ERR_PERM: insufficient privileges",
	ocfErrInstalled:     "OCF_ERR_INSTALLED: not installed",
	ocfErrConfigured:    "OCF_ERR_CONFIGURED: misconfigured",
	ocfNotRunning:       "OCF_NOT_RUNNING: not running",
	ocfRunningPromoted:  "OCF_RUNNING_PROMOTED: running as promoted",
	ocfFailedPromoted:   "OCF_FAILED_PROMOTED: failed while promoted",
	ocfDegraded:         "OCF_DEGRADED: running but degraded",
	ocfDegradedPromoted: "OCF_DEGRADED_PROMOTED: promoted but degraded",
	ocfTimedOut:         "timed out, process group killed",
	ocfCouldNotRun:      "could not execute the agent",
}

// OCFError is a failed action of an OCF resource agent. It wraps
// ErrNotRunning when the agent exited 7 (OCF_NOT_RUNNING).
type OCFError struct {
	Resource string // the resource name (OCF_RESOURCE_INSTANCE)
	Agent    string // "provider:type"
	Action   string // start, stop, monitor
	// Code is the agent's exit code, or -1 when it was killed on timeout
	// and -2 when it could not be run.
	Code int
	// Detail is what the agent said: its ocf-exit-reason lines, else the
	// tail of its output.
	Detail string
}

// Error formats e as `ocf heartbeat:Dummy monitor of "d1": exit 1
// (OCF_ERR_GENERIC: generic error): detail`.
func (e *OCFError) Error() string {
	name, ok := ocfCodeNames[e.Code]
	if !ok {
		name = "unknown exit code"
	}
	var s string
	switch e.Code {
	case ocfTimedOut, ocfCouldNotRun:
		s = fmt.Sprintf("ocf %s %s of %q: %s", e.Agent, e.Action, e.Resource, name)
	default:
		s = fmt.Sprintf("ocf %s %s of %q: exit %d (%s)", e.Agent, e.Action, e.Resource, e.Code, name)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap lets errors.Is(err, ErrNotRunning) see OCF_NOT_RUNNING.
func (e *OCFError) Unwrap() error {
	if e.Code == ocfNotRunning {
		return ErrNotRunning
	}
	return nil
}

// Hard reports whether the failure rules this node out for the resource,
// so that local restarts are pointless: invalid arguments, unimplemented,
// insufficient privileges, not installed, misconfigured (codes 2-6, which
// Pacemaker treats as hard or fatal errors). Generic errors, timeouts and
// failures of a running resource are soft.
func (e *OCFError) Hard() bool {
	return e.Code >= ocfErrArgs && e.Code <= ocfErrConfigured
}

// ocfKit runs an OCF resource agent: kind "ocf".
//
// Every action runs the agent with a clean environment (as Pacemaker's
// executor does): PATH, OCF_ROOT, the OCF_RESOURCE_* variables,
// OCF_RESKEY_<name> for each entry of params, OCF_RESKEY_CRM_meta_timeout
// and OCF_RESKEY_CRM_meta_interval. HA_RSCTMP and a few other HA_*/trace
// variables are passed on from the agent's own environment, so that
// several agents on one kernel (test nodes in namespaces) can keep their
// agents' state apart.
type ocfKit struct {
	desc      string // `ocf heartbeat:Dummy of "d1"`
	name      string
	agent     string // provider:type
	provider  string
	typ       string
	root      string // OCF_ROOT
	path      string
	reskeys   map[string]string
	quickIvMS int
	deepIvMS  int
	tmpDir    string
	log       *slog.Logger
}

// passEnv are variables of the agent's environment handed to OCF agents.
var passEnv = []string{"HA_RSCTMP", "HA_VARRUN", "HA_VARLIB", "HA_LOGFILE", "HA_DEBUGLOG", "HA_debug", "HA_LOGFACILITY", "OCF_TRACE_RA", "OCF_TRACE_FILE", "TZ"}

func newOCF(r backstop.Resource, env Env) (Instance, error) {
	return newOCFAt(r, env, ocfRoot)
}

// newOCFAt is newOCF with agents under root (tests use their own).
func newOCFAt(r backstop.Resource, env Env, root string) (*ocfKit, error) {
	p := params{r}
	agent, err := p.str("agent", true)
	if err != nil {
		return nil, err
	}
	provider, typ, ok := strings.Cut(agent, ":")
	if !ok || !safeName(provider) || !safeName(typ) {
		return nil, p.errorf("agent", `must be "provider:type", e.g. "heartbeat:IPaddr2", not %q`, agent)
	}
	reskeys, err := p.strMap("params")
	if err != nil {
		return nil, err
	}
	for k := range reskeys {
		if !envNameOK(k) {
			return nil, p.errorf("params", "%q is not a valid OCF_RESKEY_ suffix", k)
		}
	}
	k := &ocfKit{
		desc:     fmt.Sprintf("ocf %s of %q", agent, r.Name),
		name:     r.Name,
		agent:    agent,
		provider: provider,
		typ:      typ,
		root:     root,
		path:     filepath.Join(root, "resource.d", provider, typ),
		reskeys:  reskeys,
		tmpDir:   env.StateDir,
		log:      logger(env),
	}
	if r.QuickCheck != nil {
		k.quickIvMS = r.QuickCheck.IntervalMS
	}
	if r.DeepCheck != nil {
		k.deepIvMS = r.DeepCheck.IntervalMS
	}
	return k, nil
}

// safeName accepts an OCF provider or type: no path separators, no dots
// at the start.
func safeName(s string) bool {
	if s == "" || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func envNameOK(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// env returns the agent's environment for one action.
func (k *ocfKit) env(intervalMS int, timeout time.Duration, checkLevel int) []string {
	e := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"OCF_ROOT=" + k.root,
		"OCF_RA_VERSION_MAJOR=1",
		"OCF_RA_VERSION_MINOR=1",
		"OCF_RESOURCE_INSTANCE=" + k.name,
		"OCF_RESOURCE_TYPE=" + k.typ,
		"OCF_RESOURCE_PROVIDER=" + k.provider,
		"OCF_RESKEY_CRM_meta_interval=" + strconv.Itoa(intervalMS),
		"OCF_RESKEY_CRM_meta_timeout=" + strconv.FormatInt(timeout.Milliseconds(), 10),
	}
	if checkLevel > 0 {
		e = append(e, "OCF_CHECK_LEVEL="+strconv.Itoa(checkLevel))
	}
	for _, name := range passEnv {
		if v, ok := os.LookupEnv(name); ok {
			e = append(e, name+"="+v)
		}
	}
	keys := make([]string, 0, len(k.reskeys))
	for key := range k.reskeys {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		e = append(e, "OCF_RESKEY_"+key+"="+k.reskeys[key])
	}
	// ocf:heartbeat:postfix with a config_dir that is not /etc/postfix
	// checks /etc/postfix/main.cf's alternate_config_directories through
	// plain postconf calls, and returns 5 when there is no such main.cf
	// (Debian's "No configuration" install). With MAIL_CONFIG set to the
	// directory, postconf and postfix use it directly and the agent works
	// without touching /etc (measured; see the shared notes on mail and
	// OCF in namespaces, section 4).
	if k.provider == "heartbeat" && k.typ == "postfix" && k.reskeys["config_dir"] != "" {
		e = append(e, "MAIL_CONFIG="+k.reskeys["config_dir"])
	}
	return e
}

// run runs one action and returns the agent's exit code; err is an
// *OCFError when the agent could not be run or timed out.
func (k *ocfKit) run(ctx context.Context, action string, intervalMS, checkLevel int) (int, string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ocfDefaultTimeout)
		defer cancel()
	}
	d, _ := ctx.Deadline()
	fail := func(code int, detail string) (int, string, error) {
		return code, "", &OCFError{Resource: k.name, Agent: k.agent, Action: action, Code: code, Detail: detail}
	}
	fi, err := os.Stat(k.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fail(ocfErrInstalled, fmt.Sprintf("no agent %s (is the package providing it, e.g. resource-agents, installed?)", k.path))
	case err != nil:
		return fail(ocfErrInstalled, err.Error())
	case fi.IsDir() || fi.Mode()&0o111 == 0:
		return fail(ocfErrInstalled, fmt.Sprintf("%s is not an executable file", k.path))
	}
	cmd := exec.Command(k.path, action)
	cmd.Env = k.env(intervalMS, time.Until(d), checkLevel)
	cmd.Dir = "/"
	began := time.Now()
	res, err := runCommand(ctx, cmd, k.tmpDir, false)
	if err != nil && !res.timedOut {
		return fail(ocfCouldNotRun, err.Error())
	}
	if res.timedOut {
		return fail(ocfTimedOut, fmt.Sprintf("no answer within %v; %s", time.Since(began).Round(time.Millisecond), lastLines(res.output, 3)))
	}
	k.log.DebugContext(ctx, "ocf: action done", "agent", k.agent, "action", action, "exit_code", res.code,
		"took", time.Since(began).Round(time.Millisecond))
	return res.code, res.output, nil
}

// actionError is the error for an exit code that is not the expected one.
func (k *ocfKit) actionError(action string, code int, output string) error {
	return &OCFError{Resource: k.name, Agent: k.agent, Action: action, Code: code, Detail: exitReason(output)}
}

// exitReason picks the agent's ocf-exit-reason lines from its output, else
// its last lines.
func exitReason(output string) string {
	var reasons []string
	for l := range strings.SplitSeq(output, "\n") {
		if _, r, ok := strings.Cut(l, "ocf-exit-reason:"); ok {
			reasons = append(reasons, strings.TrimSpace(r))
		}
	}
	if len(reasons) > 0 {
		return strings.Join(reasons, " | ")
	}
	return lastLines(output, 3)
}

// Start runs the agent's start action, then its monitor (as a probe),
// which must report running: an agent that exits 0 from start without the
// resource running has not started it.
func (k *ocfKit) Start(ctx context.Context) error {
	code, out, err := k.run(ctx, "start", 0, 0)
	if err != nil {
		return err
	}
	if code != ocfSuccess {
		return k.actionError("start", code, out)
	}
	code, out, err = k.run(ctx, "monitor", 0, 0)
	if err != nil {
		return err
	}
	if code != ocfSuccess && code != ocfDegraded {
		return fmt.Errorf("start returned 0, but then: %w", k.actionError("monitor", code, out))
	}
	return nil
}

// Stop runs the agent's stop action; exit 7 (already not running) is
// success too.
func (k *ocfKit) Stop(ctx context.Context) error {
	code, out, err := k.run(ctx, "stop", 0, 0)
	if err != nil {
		return err
	}
	if code != ocfSuccess && code != ocfNotRunning {
		return k.actionError("stop", code, out)
	}
	return nil
}

// Check runs the agent's monitor action; the deep check runs it with
// OCF_CHECK_LEVEL=20. OCF_RESKEY_CRM_meta_interval is the check's
// interval, so agents run their recurring-monitor logic, not the lighter
// probe. Exit 7 returns an *OCFError that wraps ErrNotRunning; 190
// (degraded) counts as running and is logged.
func (k *ocfKit) Check(ctx context.Context, deep bool) error {
	iv, level := k.quickIvMS, 0
	if deep {
		iv, level = k.deepIvMS, 20
	}
	code, out, err := k.run(ctx, "monitor", iv, level)
	if err != nil {
		return err
	}
	switch code {
	case ocfSuccess:
		return nil
	case ocfDegraded:
		k.log.WarnContext(ctx, "ocf: resource running but degraded", "agent", k.agent, "detail", exitReason(out))
		return nil
	}
	return k.actionError("monitor", code, out)
}

// Fence runs the agent's stop action with a 1 s timeout, killing the
// agent's process group if it takes longer. OCF has no fast-kill action:
// stop is the only way the API offers to take a resource away, and it may
// be slow (postfix stop waits for its master). Put resources that must be
// fenced in milliseconds under kits that kill directly (service with a
// pid_file, ip, volume) or combine: the ip kit's fence removes the
// address in any case.
func (k *ocfKit) Fence() error {
	ctx, cancel := context.WithTimeout(context.Background(), ocfFenceTimeout)
	defer cancel()
	return k.Stop(ctx)
}
