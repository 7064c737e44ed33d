// Command backstopctl is the operator CLI of Backstop. It drives backstopd,
// the control plane, through its HTTP API (openapi/backstop.yaml): clusters,
// their nodes and communication paths, resource hierarchies, API tokens and
// the audit trail.
//
// Usage:
//
//	backstopctl [--server URL] [--token T] [-o table|json] [--timeout D] COMMAND ...
//
// The server URL and the API token default to $BACKSTOP_URL and
// $BACKSTOP_TOKEN. List commands follow the API's cursors and print every
// page unless --limit caps them. Create commands send an Idempotency-Key
// (a fresh UUID unless --idempotency-key names one), so repeating a create
// with the same key is safe. With -o json the API's own JSON is printed,
// pretty-printed; a list prints {"items": [...]} holding every page.
//
// Exit status: 0 on success, 1 when the request failed (an API problem, a
// network error, an unreadable file), 2 for a usage error.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

const (
	defaultServer  = "http://127.0.0.1:8080"
	defaultTimeout = 30 * time.Second
	envServer      = "BACKSTOP_URL"
	envToken       = "BACKSTOP_TOKEN"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one backstopctl invocation and returns its exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	return reportError(stderr, cmd, err)
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "backstopctl",
		Short: "Operate a Backstop control plane",
		Long: `backstopctl manages Backstop through the backstopd API: clusters, nodes,
communication paths, resource hierarchies, API tokens and the audit trail.

The server and token default to $` + envServer + ` and $` + envToken + `.
Exit status: 0 on success, 1 when the request failed, 2 for a usage error.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	f := root.PersistentFlags()
	f.StringVar(&a.opts.server, "server", defaultServer, "URL of the backstopd API (env "+envServer+")")
	f.StringVar(&a.opts.token, "token", "", "API token (env "+envToken+")")
	f.StringVarP(&a.opts.output, "output", "o", outputTable, "output format: table or json")
	f.DurationVar(&a.opts.timeout, "timeout", defaultTimeout, "time limit of each HTTP request")

	root.AddCommand(
		newClustersCmd(a),
		newNodesCmd(a),
		newPathsCmd(a),
		newHierarchiesCmd(a),
		newTokensCmd(a),
		newAuditCmd(a),
	)
	a.wrapCommands(root)
	return root
}
