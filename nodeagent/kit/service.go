package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backstop-ha/backstop"
)

func init() { kinds[backstop.KindService] = newService }

const (
	// defaultStopTimeout applies when stop_timeout_ms is not given.
	defaultStopTimeout = 10 * time.Second
	// pidFileWait bounds how long Start waits for pid_file to name a live
	// process.
	pidFileWait = 5 * time.Second
	// startGrace is how long Start watches a started process for an
	// immediate exit (command not found, bad syntax) so that Start can
	// report it instead of the next check; short because it adds to every
	// failover.
	startGrace = 25 * time.Millisecond
	// killWait bounds the wait for processes to go after SIGKILL.
	killWait = 2 * time.Second
	// pollEvery is the polling period while waiting for processes.
	pollEvery = 10 * time.Millisecond
	// serviceLogMax is the size at which service.log is rotated at Start.
	serviceLogMax = 4 << 20

	serviceStateFile = "service.pid"
	serviceLogFile   = "service.log"
)

// serviceKit is a process started by a shell command: kind "service".
//
// start runs with /bin/sh -c in a process group of its own, with stdin
// from /dev/null and stdout and stderr appended to service.log in the
// state directory, so nothing ties it to the agent: it keeps running when
// the agent exits or restarts. The started process (the "launcher") is
// recorded in service.pid in the state directory as its pid and start
// time, so a restarted agent still finds it and a reused pid is not
// mistaken for it.
//
// Without pid_file, the launcher is the service: start must run in the
// foreground (exec mydaemon --foreground). With pid_file, the service is
// the process the file names, and start may daemonize (postfix start).
type serviceKit struct {
	desc        string // "service web", the prefix of every error
	startCmd    string
	stopCmd     string
	pidFile     string
	stopTimeout time.Duration
	stateDir    string
	grace       time.Duration // startGrace; tests lengthen it
	log         *slog.Logger
}

func newService(r backstop.Resource, env Env) (Instance, error) {
	p := params{r}
	k := &serviceKit{desc: "service " + r.Name, stateDir: env.StateDir, grace: startGrace, log: logger(env)}
	var err error
	if k.startCmd, err = p.str("start", true); err != nil {
		return nil, err
	}
	if k.stopCmd, err = p.str("stop", false); err != nil {
		return nil, err
	}
	if k.pidFile, err = p.str("pid_file", false); err != nil {
		return nil, err
	}
	if k.pidFile != "" && !filepath.IsAbs(k.pidFile) {
		return nil, p.errorf("pid_file", "must be an absolute path")
	}
	ms, err := p.integer("stop_timeout_ms", int(defaultStopTimeout/time.Millisecond), 1, 3600000)
	if err != nil {
		return nil, err
	}
	k.stopTimeout = time.Duration(ms) * time.Millisecond
	if env.StateDir == "" {
		return nil, fmt.Errorf("resource %q (service): the agent gave no state directory (Env.StateDir)", r.Name)
	}
	return k, nil
}

// launcher is the recorded started process, which leads its process group.
type launcher struct {
	pid   int
	start uint64
}

func (k *serviceKit) statePath() string { return filepath.Join(k.stateDir, serviceStateFile) }

// readLauncher returns the recorded launcher; ok is false when none is
// recorded.
func (k *serviceKit) readLauncher() (l launcher, ok bool, err error) {
	b, err := os.ReadFile(k.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return launcher{}, false, nil
	}
	if err != nil {
		return launcher{}, false, fmt.Errorf("%s: %w", k.desc, err)
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		l.pid, err = strconv.Atoi(f[0])
		if err == nil {
			l.start, err = strconv.ParseUint(f[1], 10, 64)
		}
		if err == nil && l.pid > 1 {
			return l, true, nil
		}
	}
	return launcher{}, false, fmt.Errorf("%s: %s is corrupt: %q", k.desc, k.statePath(), b)
}

// writeLauncher records l, atomically and durably: a restarted agent must
// find it.
func (k *serviceKit) writeLauncher(l launcher) error {
	tmp := k.statePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d %d\n", l.pid, l.start)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, k.statePath())
	}
	return err
}

// readPidFile returns the pid in pid_file; ok is false when the file does
// not exist.
func (k *serviceKit) readPidFile() (pid int, ok bool, err error) {
	b, err := os.ReadFile(k.pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("%s: pid file: %w", k.desc, err)
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false, fmt.Errorf("%s: pid file %s does not hold a pid: %q", k.desc, k.pidFile, strings.TrimSpace(string(b)))
	}
	return pid, true, nil
}

// Check reports whether the service's process is alive (signal 0 reaches
// it and /proc says it is not a zombie): the pid in pid_file, else the
// recorded launcher. It returns ErrNotRunning when there is no pid file,
// or no launcher recorded, and an error when the recorded process has
// died. The deep check is the quick check: how a service answers is what
// the hierarchy's tcp, http, smtp and command probes test.
func (k *serviceKit) Check(ctx context.Context, deep bool) error {
	if k.pidFile != "" {
		pid, ok, err := k.readPidFile()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: no pid file %s: %w", k.desc, k.pidFile, ErrNotRunning)
		}
		if !alive(pid, 0) {
			return fmt.Errorf("%s: process %d (from pid file %s) is not running", k.desc, pid, k.pidFile)
		}
		return nil
	}
	l, ok, err := k.readLauncher()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: not started: %w", k.desc, ErrNotRunning)
	}
	if !alive(l.pid, l.start) {
		return fmt.Errorf("%s: process %d exited", k.desc, l.pid)
	}
	return nil
}

// Start runs the start command unless the service is already running.
// With pid_file it then waits (up to 5 s, or ctx) for the file to name a
// live process; without, it returns once the process is started and has
// not exited at once.
func (k *serviceKit) Start(ctx context.Context) error {
	if k.Check(ctx, false) == nil {
		return nil
	}
	if k.pidFile != "" {
		// The service is not running, so a pid file is stale: remove it,
		// or Start could take a reused pid in it for the new service.
		if _, ok, _ := k.readPidFile(); ok {
			os.Remove(k.pidFile)
		}
	}
	logPath := filepath.Join(k.stateDir, serviceLogFile)
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > serviceLogMax {
		os.Rename(logPath, logPath+".1")
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", k.desc, err)
	}
	defer logf.Close()
	cmd := shell(k.startCmd)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that stopping it reaches its children
	// and a signal to the agent's group (Ctrl-C, systemd's stop) does
	// not; no Pdeathsig, so it outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start %q: %w", k.desc, k.startCmd, err)
	}
	l := launcher{pid: cmd.Process.Pid}
	if p, err := readProc(l.pid); err == nil {
		l.start = p.start
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // reap it, whenever it exits; the state says the rest
		close(exited)
	}()
	if err := k.writeLauncher(l); err != nil {
		signalGroup(l.pid, l.start, unix.SIGKILL)
		return fmt.Errorf("%s: record the started process: %w", k.desc, err)
	}
	k.log.InfoContext(ctx, "service: started", "pid", l.pid, "command", k.startCmd)
	if k.pidFile == "" {
		select {
		case <-exited:
			return fmt.Errorf("%s: %q exited at once (%s)%s", k.desc, k.startCmd, cmd.ProcessState, k.logTail(logPath))
		case <-time.After(k.grace):
			return nil
		case <-ctx.Done():
			return nil // started; the caller's deadline is not our failure
		}
	}
	began := time.Now()
	wait, cancel := context.WithTimeout(ctx, pidFileWait)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	launcherDone := false
	for {
		if pid, ok, _ := k.readPidFile(); ok && alive(pid, 0) {
			k.log.InfoContext(ctx, "service: running", "pid", pid, "pid_file", k.pidFile)
			return nil
		}
		select {
		case <-exited:
			exited = nil
			launcherDone = true
			if !cmd.ProcessState.Success() {
				return fmt.Errorf("%s: %q failed (%s)%s", k.desc, k.startCmd, cmd.ProcessState, k.logTail(logPath))
			}
		case <-tick.C:
		case <-wait.Done():
			how := "still running"
			if launcherDone {
				how = "exited 0"
			}
			return fmt.Errorf("%s: pid file %s names no live process %v after start (start command %s)%s",
				k.desc, k.pidFile, time.Since(began).Round(time.Millisecond), how, k.logTail(logPath))
		}
	}
}

// logTail formats the end of service.log for an error message.
func (k *serviceKit) logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if t := lastLines(readTail(f, 1024), 5); t != "" {
		return ": " + t
	}
	return ""
}

// target is a process to stop: the service and the launcher's group.
type target struct {
	pid   int
	start uint64 // 0: unknown (from a pid file)
	group bool   // signal its process group, which it leads
}

// targets returns what is alive of the service: the pid in pid_file (and
// its group if it leads one, as a daemon that called setsid does) and the
// recorded launcher's group.
func (k *serviceKit) targets() []target {
	var ts []target
	if k.pidFile != "" {
		if pid, ok, _ := k.readPidFile(); ok && alive(pid, 0) {
			t := target{pid: pid}
			if p, err := readProc(pid); err == nil {
				t.start, t.group = p.start, p.pgrp == pid
			}
			ts = append(ts, t)
		}
	}
	if l, ok, _ := k.readLauncher(); ok {
		if alive(l.pid, l.start) || (l.start != 0 && !leaderReused(l) && len(groupMembers(l.pid)) > 0) {
			ts = append(ts, target{pid: l.pid, start: l.start, group: true})
		}
	}
	return ts
}

// leaderReused tells whether l's pid now names another process.
func leaderReused(l launcher) bool {
	p, err := readProc(l.pid)
	return err == nil && p.start != l.start
}

func (k *serviceKit) signal(ts []target, sig unix.Signal) {
	for _, t := range ts {
		if t.pid == os.Getpid() {
			continue // a pid file naming the agent itself
		}
		if t.group {
			signalGroup(t.pid, t.start, sig)
		} else if alive(t.pid, t.start) {
			unix.Kill(t.pid, sig)
		}
	}
}

// gone tells whether every target has exited, group members included.
func gone(ts []target) bool {
	for _, t := range ts {
		if alive(t.pid, t.start) {
			return false
		}
		if t.group && len(groupMembers(t.pid)) > 0 {
			return false
		}
	}
	return true
}

// waitGone polls until ts are gone, deadline passes or ctx ends.
func waitGone(ctx context.Context, ts []target, deadline time.Time) bool {
	for {
		if gone(ts) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(pollEvery)
	}
}

// Stop runs the stop command if one is given, else sends SIGTERM to the
// service's process group; waits up to stop_timeout_ms (less if ctx ends
// sooner) for every process of it to exit; then sends SIGKILL. A service
// that is not running is stopped already.
func (k *serviceKit) Stop(ctx context.Context) error {
	ts := k.targets()
	if len(ts) == 0 {
		k.forget()
		return nil
	}
	deadline := time.Now().Add(k.stopTimeout)
	if d, ok := ctx.Deadline(); ok && d.Add(-killWait/4).Before(deadline) {
		deadline = d.Add(-killWait / 4) // keep time to kill before the caller gives up
	}
	began := time.Now()
	termed := false
	if k.stopCmd != "" {
		sctx, cancel := context.WithDeadline(ctx, deadline)
		res, err := runCommand(sctx, shell(k.stopCmd), k.stateDir, false)
		cancel()
		switch {
		case err != nil:
			k.log.WarnContext(ctx, "service: stop command could not run; sending SIGTERM", "error", err)
		case res.timedOut:
			k.log.WarnContext(ctx, "service: stop command timed out", "timeout", k.stopTimeout)
		case res.code != 0:
			k.log.WarnContext(ctx, "service: stop command failed; sending SIGTERM", "exit_code", res.code, "output", lastLines(res.output, 5))
		default:
			termed = true
		}
	}
	if !termed {
		k.signal(ts, unix.SIGTERM)
	}
	if !waitGone(ctx, ts, deadline) {
		k.signal(ts, unix.SIGKILL)
		k.log.WarnContext(ctx, "service: did not stop in time; killed its processes with SIGKILL",
			"waited", time.Since(began).Round(time.Millisecond), "stop_timeout", k.stopTimeout)
		// Not ctx: having sent SIGKILL, see it through.
		if !waitGone(context.Background(), ts, time.Now().Add(killWait)) {
			return fmt.Errorf("%s: processes still alive %v after SIGKILL (uninterruptible sleep?)", k.desc, killWait)
		}
	}
	k.forget()
	k.log.InfoContext(ctx, "service: stopped", "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// forget removes the launcher record and a pid file that names no live
// process (one left by a killed service), so that Check then reports
// ErrNotRunning.
func (k *serviceKit) forget() {
	os.Remove(k.statePath())
	if k.pidFile != "" {
		if pid, ok, _ := k.readPidFile(); ok && !alive(pid, 0) {
			os.Remove(k.pidFile)
		}
	}
}

// Fence sends SIGKILL to the service's process (group) and the launcher's
// group at once and does not wait. The records stay, so a check after it
// reports the service as failed, not as cleanly stopped.
func (k *serviceKit) Fence() error {
	k.signal(k.targets(), unix.SIGKILL)
	return nil
}
