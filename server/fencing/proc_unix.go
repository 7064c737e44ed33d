//go:build unix

package fencing

import (
	"os/exec"
	"syscall"
)

func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: the agent and whatever it started.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// fenceNice is the scheduling priority of a running fence agent. The
// fence is on the failover's critical path (nothing moves until it is
// confirmed) and fence agents are mostly interpreter start-up (Python),
// which an unrelated CPU hog on the control plane's host would otherwise
// stretch from a few hundred milliseconds to seconds. Best effort: without
// CAP_SYS_NICE the agent runs at backstopd's own priority.
const fenceNice = -10

func raisePriority(cmd *exec.Cmd) {
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, fenceNice)
}
