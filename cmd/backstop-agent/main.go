// Command backstop-agent is Backstop's node agent: it runs on every
// protected node, enrolls with the control plane once, then heartbeats,
// executes signed commands, monitors and recovers resources, and fences
// the node when it is cut off. See package nodeagent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/backstop-ha/backstop/nodeagent"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// options are the command line, before they become a nodeagent.Config.
type options struct {
	cfg       nodeagent.Config
	logFormat string
	logLevel  string
	version   bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "guard" {
		guardMain(os.Args[2:])
		return
	}
	o, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "backstop-agent:", err)
		os.Exit(2)
	}
	if o.version {
		fmt.Println(version)
		return
	}
	log := newLogger(o, os.Stderr)
	o.cfg.Logger = log
	// SIGTERM (systemd stop) and SIGINT end the loops; resources stay as
	// they are, so restarting the agent never takes services down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := nodeagent.New(o.cfg)
	if err == nil {
		err = a.Run(ctx)
	}
	if err != nil {
		log.Error("backstop-agent stopped", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	d := nodeagent.DefaultConfig()
	o := options{cfg: d}
	fs := flag.NewFlagSet("backstop-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	servers := fs.String("server", env("BACKSTOP_SERVER", ""), "control plane URL(s), comma-separated: the next is tried on connection errors and 5xx (BACKSTOP_SERVER)")
	fs.StringVar(&o.cfg.DataDir, "data-dir", env("BACKSTOP_DATA_DIR", d.DataDir), "directory of the key pair, credential, cached configuration and local state (BACKSTOP_DATA_DIR)")
	fs.StringVar(&o.cfg.EnrollToken, "enroll-token", env("BACKSTOP_ENROLL_TOKEN", ""), "one-time enrollment token of this node, used on first start (BACKSTOP_ENROLL_TOKEN)")
	fs.StringVar(&o.cfg.CAFile, "ca-file", env("BACKSTOP_CA_FILE", ""), "PEM CA certificates that verify the control plane when the enrollment token pins no CA (the system's when empty); a pinned CA always wins (BACKSTOP_CA_FILE)")
	port := fs.String("path-port", env("BACKSTOP_PATH_PORT", strconv.Itoa(d.PathPort)), "UDP port of communication path heartbeats (BACKSTOP_PATH_PORT)")
	fs.StringVar(&o.cfg.MetricsListen, "metrics-listen", env("BACKSTOP_METRICS_LISTEN", d.MetricsListen), "address of /metrics; empty or \"off\" disables (BACKSTOP_METRICS_LISTEN)")
	fs.StringVar(&o.cfg.Watchdog, "watchdog", env("BACKSTOP_WATCHDOG", ""), "watchdog device fed while the agent is healthy, e.g. /dev/watchdog (BACKSTOP_WATCHDOG)")
	fs.BoolVar(&o.cfg.FenceGuard, "fence-guard", envBool(getenv, "BACKSTOP_FENCE_GUARD", true), "run the node's fence guard, which fences this node's hierarchies when the agent dies, stops or hangs without renewing its lease (BACKSTOP_FENCE_GUARD)")
	fs.StringVar(&o.cfg.GuardLog, "guard-log", env("BACKSTOP_GUARD_LOG", ""), "file the fence guard appends its logs to; empty: the agent's standard error (BACKSTOP_GUARD_LOG)")
	fs.DurationVar(&o.cfg.RestartHold, "restart-hold", envDuration(getenv, "BACKSTOP_RESTART_HOLD", d.RestartHold), "on a clean stop (SIGTERM), ask the control plane to keep this node's hierarchies in place this long for the next agent process; 0 disables (BACKSTOP_RESTART_HOLD)")
	fs.StringVar(&o.logFormat, "log-format", env("BACKSTOP_LOG_FORMAT", "json"), "log format: json or text (BACKSTOP_LOG_FORMAT)")
	fs.StringVar(&o.logLevel, "log-level", env("BACKSTOP_LOG_LEVEL", "info"), "log level: debug, info, warn, error (BACKSTOP_LOG_LEVEL)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: backstop-agent --server URL[,URL...] --data-dir DIR [--enroll-token T] [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.version {
		return o, nil
	}
	for _, s := range strings.Split(*servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.cfg.Servers = append(o.cfg.Servers, s)
		}
	}
	p, err := strconv.Atoi(*port)
	if err != nil {
		return o, fmt.Errorf("--path-port: %q is not a number", *port)
	}
	o.cfg.PathPort = p
	if o.cfg.MetricsListen == "off" {
		o.cfg.MetricsListen = ""
	}
	o.cfg.Version = version
	o.cfg.GuardArgs = []string{"--log-format", o.logFormat, "--log-level", o.logLevel}
	if o.cfg.Watchdog != "" {
		o.cfg.GuardArgs = append(o.cfg.GuardArgs, "--watchdog", o.cfg.Watchdog)
	}
	if o.logFormat != "json" && o.logFormat != "text" {
		return o, fmt.Errorf("--log-format must be json or text, not %q", o.logFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	if err := o.cfg.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

func newLogger(o options, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel)) // checked by parseFlags
	opts := &slog.HandlerOptions{Level: lvl}
	if o.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// envBool reads a boolean environment variable, def when unset or not a
// boolean.
func envBool(getenv func(string) string, k string, def bool) bool {
	if b, err := strconv.ParseBool(getenv(k)); err == nil {
		return b
	}
	return def
}

// envDuration reads a duration environment variable, def when unset or
// not a duration.
func envDuration(getenv func(string) string, k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(getenv(k)); err == nil {
		return d
	}
	return def
}

// guardMain runs `backstop-agent guard`: the fence guard the agent starts
// for its data directory (see nodeagent.RunGuard). It ignores SIGTERM,
// SIGINT and SIGHUP: it is a dead man's switch that must outlive a stop
// of the agent (systemd's KillMode=process leaves it running, like the
// services); only SIGKILL, or a reboot, ends it.
func guardMain(args []string) {
	fs := flag.NewFlagSet("backstop-agent guard", flag.ContinueOnError)
	dir := fs.String("data-dir", nodeagent.DefaultConfig().DataDir, "the agent's data directory")
	var o options
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level")
	wd := fs.String("watchdog", "", "watchdog device the guard feeds while it runs and its fencings succeed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	// SIGPIPE too: a closed log pipe (the agent that started it gone)
	// must not end the guard.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	log := newLogger(o, os.Stderr).With("component", "guard")
	err := nodeagent.RunGuard(context.Background(), nodeagent.GuardConfig{DataDir: *dir, Logger: log, Realtime: true, Watchdog: *wd})
	if err != nil {
		log.Error("fence guard stopped", "err", err)
		os.Exit(1)
	}
}
