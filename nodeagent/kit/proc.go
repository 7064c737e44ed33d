package kit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Process helpers shared by the service, ocf and command kits.

// procInfo is what /proc/PID/stat says about a process.
type procInfo struct {
	state byte   // R, S, D, Z, X, T, ...
	pgrp  int    // process group
	start uint64 // start time in clock ticks since boot: with the pid, identifies the process
}

// readProc reads /proc/PID/stat.
func readProc(pid int) (procInfo, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, err
	}
	// "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime ..."; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procInfo{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || len(f[0]) != 1 {
		return procInfo{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return procInfo{state: f[0][0], pgrp: pgrp, start: start}, nil
}

// dead tells whether a state is a process that has exited (zombie or
// dying) and only waits to be reaped.
func (p procInfo) dead() bool { return p.state == 'Z' || p.state == 'X' || p.state == 'x' }

// alive tells whether pid is a live process: signal 0 reaches it and it is
// not a zombie. When start is not 0 the process must also have started at
// that time, so that a pid reused by another process does not count.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := unix.Kill(pid, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	p, err := readProc(pid)
	if err != nil || p.dead() {
		return false
	}
	return start == 0 || p.start == start
}

// groupMembers returns the live processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil && p.pgrp == pgid && !p.dead() {
			out = append(out, pid)
		}
	}
	return out
}

// signalGroup sends sig to process group pgid, which a process started at
// start leads (or led). It refuses the agent's own group, and a group
// whose leader is a different process than the recorded one: the kernel
// keeps a process-group id from being reused while any member is alive,
// so a leader with another start time means our group is gone and the
// number names someone else's. A leader that is gone while members remain
// is still our group.
func signalGroup(pgid int, start uint64, sig unix.Signal) error {
	if pgid <= 1 || pgid == unix.Getpgrp() {
		return nil
	}
	if p, err := readProc(pgid); err == nil && start != 0 && p.start != start {
		return nil
	}
	if err := unix.Kill(-pgid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// shellResult is how a shell command ended.
type shellResult struct {
	code     int    // exit code; -1 when killed by a signal
	output   string // the tail of its combined stdout and stderr
	timedOut bool   // the context ended first and the process group was killed
}

// outputTail is how much of a command's output is kept for errors.
const outputTail = 4096

// runCommand runs cmd in a process group of its own, with stdout and
// stderr to an unlinked temporary file in tmpDir (not a pipe: a daemon
// that a start action leaves behind keeps its inherited descriptors, and
// waiting for a pipe to close would wait for the daemon), and kills the
// whole group with SIGKILL when ctx ends first. killGroupAfter also kills
// what the command left in its group after it exits (for checks, which
// must not leave anything behind).
func runCommand(ctx context.Context, cmd *exec.Cmd, tmpDir string, killGroupAfter bool) (shellResult, error) {
	out, err := os.CreateTemp(tmpDir, ".kit-output-*")
	if err != nil {
		return shellResult{}, fmt.Errorf("output file: %w", err)
	}
	os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := ctx.Err(); err != nil {
		return shellResult{timedOut: true, code: -1}, err
	}
	if err := cmd.Start(); err != nil {
		return shellResult{}, err
	}
	pid := cmd.Process.Pid
	stop := context.AfterFunc(ctx, func() { unix.Kill(-pid, unix.SIGKILL) })
	werr := cmd.Wait()
	timedOut := !stop() // the AfterFunc ran: ctx ended while the command ran
	if killGroupAfter && !timedOut {
		unix.Kill(-pid, unix.SIGKILL)
	}
	res := shellResult{code: -1, output: readTail(out, outputTail), timedOut: timedOut}
	if cmd.ProcessState != nil {
		res.code = cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		return res, werr
	}
	return res, nil
}

// shell builds /bin/sh -c script.
func shell(script string) *exec.Cmd {
	c := exec.Command("/bin/sh", "-c", script)
	c.Dir = "/"
	return c
}

// readTail returns the last n bytes of f, from a line start when possible.
func readTail(f *os.File, n int64) string {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	off := max(size-n, 0)
	b := make([]byte, size-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(string(b))
}

// lastLines returns at most n trailing lines of s, joined with " | ", for
// one-line error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var keep []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, " | ")
}
