//go:build linux

package e2e

import "syscall"

// childAttr makes the kernel kill a backstopd child when the test binary
// dies without stopping it (a test timeout panic, SIGKILL), so no server is
// left behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
