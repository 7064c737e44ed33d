// Package fencing runs fence agents of Debian's fence-agents package
// (fence_redfish, fence_ipmilan, ...) the way Pacemaker's fencer does:
// the program gets its options on stdin, one name=value line each, with
// action=off, then again with action=status, whose exit code confirms
// the node off (fence-agents: 0 on, 2 off, anything else an error). A
// fence counts only when status confirms off: an agent that exits 0 on
// off without the node being off (a BMC that accepted ForceOff and did
// nothing) does not release the node's hierarchies.
package fencing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/backstop-ha/backstop"
)

// Runner fences nodes through their fence devices.
type Runner struct {
	// Dir holds the fence agents (default /usr/sbin).
	Dir string
	// Open unseals a device's secret options (sealed under
	// backstop.FenceSealID(node id)).
	Open func(id string, sealed []byte) ([]byte, error)
}

// exitMeaning names fence-agents' exit codes (fencing.py EC_*).
var exitMeaning = map[int]string{
	1: "generic error", 2: "bad arguments", 3: "login denied", 4: "connection lost", 5: "timed out",
	6: "timed out waiting for power on", 7: "timed out waiting for power off", 8: "could not get the power status",
	9: "HMC status error", 10: "password missing", 11: "invalid privileges", 12: "could not fetch the VM UUID",
}

// maxOutput bounds the agent output kept for a failure's detail.
const maxOutput = 512

// Fence powers the device's node off and confirms it off. It returns
// nil only when status answered off; the error says which step failed,
// with the agent's exit code and its output (truncated, with every
// secret value masked).
func (r *Runner) Fence(ctx context.Context, d backstop.FenceDevice) error {
	if !backstop.ValidFenceAgentName(d.Agent) {
		return fmt.Errorf("%q is no fence agent name", d.Agent)
	}
	secrets := map[string]string{}
	if len(d.SecretSealed) > 0 {
		if r.Open == nil {
			return errors.New("no sealer to open the device's secret options")
		}
		plain, err := r.Open(backstop.FenceSealID(d.NodeID), d.SecretSealed)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(plain, &secrets); err != nil {
			return fmt.Errorf("the device's secret options: %w", err)
		}
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = backstop.DefaultFenceTimeout
	}
	dir := r.Dir
	if dir == "" {
		dir = "/usr/sbin"
	}
	path := filepath.Join(dir, d.Agent)
	code, out, err := run(ctx, path, backstop.FenceStdin("off", d.Params, secrets), timeout)
	if err != nil {
		return fmt.Errorf("off: %w%s", err, mask(out, secrets))
	}
	if code != 0 {
		return fmt.Errorf("off: %s exited %d (%s)%s", d.Agent, code, meaning(code), mask(out, secrets))
	}
	code, out, err = run(ctx, path, backstop.FenceStdin("status", d.Params, secrets), timeout)
	switch {
	case err != nil:
		return fmt.Errorf("status after off: %w%s", err, mask(out, secrets))
	case code == 2:
		return nil
	case code == 0:
		return fmt.Errorf("status after off: %s says the node is still on%s", d.Agent, mask(out, secrets))
	default:
		return fmt.Errorf("status after off: %s exited %d (%s)%s", d.Agent, code, meaning(code), mask(out, secrets))
	}
}

func meaning(code int) string {
	if m, ok := exitMeaning[code]; ok {
		return m
	}
	return "unknown exit code"
}

// run runs the agent once with stdin and a deadline, in a process group
// of its own that is killed whole at the deadline (an agent may run
// helpers such as ipmitool). It returns the exit code and the combined
// output; err only when the agent could not run or ran out of time.
func run(ctx context.Context, path string, stdin []byte, timeout time.Duration) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin = bytes.NewReader(stdin)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "LC_ALL=C"}
	cmd.WaitDelay = time.Second
	setProcessGroup(cmd)
	err := cmd.Start()
	if err == nil {
		raisePriority(cmd)
		err = cmd.Wait()
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, out.String(), fmt.Errorf("no answer within %s", timeout)
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), nil
	case err != nil:
		return -1, out.String(), err
	}
	return 0, out.String(), nil
}

// mask formats the agent's output for a detail: secrets replaced, line
// breaks flattened, the tail kept (the error is usually last).
func mask(out string, secrets map[string]string) string {
	for _, v := range secrets {
		if v != "" {
			out = strings.ReplaceAll(out, v, "***")
		}
	}
	out = strings.Join(strings.Fields(out), " ")
	if out == "" {
		return ""
	}
	if len(out) > maxOutput {
		out = "..." + out[len(out)-maxOutput:]
	}
	return ": " + out
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
