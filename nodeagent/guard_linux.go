package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive flock on path without blocking. held is
// false when another process holds it.
func lockFile(path string) (unlock func(), held bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, true, nil
}

// guardRTPriority is the guard's SCHED_RR priority: above every
// normal-priority process (services, CPU hogs), below the kernel's own
// real-time threads (priority 50 and up on most distributions).
const guardRTPriority = 10

// guardPriority gives every thread of this process a real-time round-robin
// priority (threads created later inherit it from their creator), locks
// its memory and makes the OOM killer spare it, as SBD does for its
// watchers. It needs root (CAP_SYS_NICE, CAP_IPC_LOCK).
func guardPriority() error {
	var errs []error
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		errs = append(errs, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// No SCHED_RESET_ON_FORK: the kernel applies it to new threads
		// too, and the Go runtime starts threads when it needs them,
		// which would then run at normal priority. So what a kit's
		// Fence runs (an OCF agent's stop, bounded by its fence timeout)
		// runs real-time too, like the rest of the fencing.
		attr := unix.SchedAttr{Policy: unix.SCHED_RR, Priority: guardRTPriority}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
			errs = append(errs, fmt.Errorf("real-time priority: %w", err))
			break
		}
	}
	if os.Geteuid() == 0 {
		// Only with the privilege: without it MCL_FUTURE makes later
		// allocations fail, which the Go runtime cannot survive.
		// MCL_ONFAULT locks pages as they are touched instead of
		// populating every mapping: the Go runtime reserves far more
		// address space than it uses (without it: 120 MB resident).
		if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
			errs = append(errs, fmt.Errorf("mlockall: %w", err))
		}
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		errs = append(errs, fmt.Errorf("oom_score_adj: %w", err))
	}
	return errors.Join(errs...)
}

// peerPID returns the pid of a Unix socket's peer (SO_PEERCRED), or 0.
func peerPID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return 0
	}
	return int(cred.Pid)
}

// killAndWait SIGKILLs p (through its pidfd: never another process that
// reused the pid) and waits up to limit for it to be gone. It reports
// whether p was alive.
func killAndWait(p *os.Process, limit time.Duration) bool {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return false
	}
	end := time.Now().Add(limit)
	for time.Now().Before(end) && !exited(p) {
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// exited tells whether p has terminated (a zombie counts).
func exited(p *os.Process) bool {
	if err := p.Signal(syscall.Signal(0)); err != nil {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// guardSysProcAttr detaches the guard from the agent: a session of its
// own, so that signals to the agent's process group (a terminal's ^C, a
// kill of the group) do not reach it, and no parent-death signal.
func guardSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}
