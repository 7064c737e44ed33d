// Command backstopctl is the operator CLI of Backstop. It drives backstopd,
// the control plane, through its HTTP API (openapi/backstop.yaml) and the
// generated Go client: a one-screen status of each cluster (like
// crm_mon -1, live with --watch), the placement actions (switchover,
// in-service, out-of-service, maintenance on|off, each with --wait and
// progress), explain, simulate, incidents, the event log (--follow over
// Server-Sent Events), failed marks, webhooks and SNMP targets, and the
// configuration: clusters, nodes, paths, hierarchies, API tokens and the
// audit trail.
//
// Usage:
//
//	backstopctl [--server URL] [--token T] [--ca-file F] [-o table|json|yaml] [--timeout D] COMMAND ...
//
// Objects are named by name or by UUID wherever an id is accepted
// (backstopctl status mail). The server URL, the API token and the CA
// file default to $BACKSTOP_URL, $BACKSTOP_TOKEN and $BACKSTOP_CA_FILE; a server URL ending in /v1 is taken
// without it. List commands follow the API's cursors and print every page
// unless --limit caps them. Create commands send an Idempotency-Key; a
// create that got no answer is retried with the same key when the same
// command runs again (or with --idempotency-key). Destructive commands say
// what they remove and ask for "yes" (--yes in scripts). With -o json or
// -o yaml the API's own document is printed.
//
// Exit status: 0 on success, 1 when the request failed (an API problem, a
// network error, a failed operation), 2 for a usage error, 3 when --wait
// ran out of time with the operation still running.
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
	envCAFile      = "BACKSTOP_CA_FILE"
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
		Long: `backstopctl operates Backstop through the backstopd API: the status of
clusters, placement actions (switchover, in/out of service, maintenance),
explain and simulate, incidents and events, webhooks and SNMP targets, and
the configuration (clusters, nodes, paths, hierarchies, tokens, audit).
Objects are named by name or id.

The server, token and CA file default to $` + envServer + `, $` + envToken + ` and $` + envCAFile + `.
Exit status: 0 on success, 1 when the request failed, 2 for a usage error,
3 when --wait ran out of time.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	f := root.PersistentFlags()
	f.StringVar(&a.opts.server, "server", defaultServer, "URL of the backstopd API (env "+envServer+")")
	f.StringVar(&a.opts.token, "token", "", "API token (env "+envToken+")")
	f.StringVarP(&a.opts.output, "output", "o", outputTable, "output format: table, json or yaml")
	f.DurationVar(&a.opts.timeout, "timeout", defaultTimeout, "time limit of each HTTP request")
	f.StringVar(&a.opts.caFile, "ca-file", "", "PEM CA certificates that verify the server's TLS certificate instead of the system's (env "+envCAFile+")")

	root.AddCommand(
		newClustersCmd(a),
		newNodesCmd(a),
		newPathsCmd(a),
		newHierarchiesCmd(a),
		newTokensCmd(a),
		newAuditCmd(a),
		newStatusCmd(a),
		newSwitchoverCmd(a),
		newInServiceCmd(a),
		newOutOfServiceCmd(a),
		newMaintenanceCmd(a),
		newExplainCmd(a),
		newSimulateCmd(a),
		newFailedMarksCmd(a),
		newOperationsCmd(a),
		newIncidentsCmd(a),
		newEventsCmd(a),
		newWebhooksCmd(a),
		newSnmpTargetsCmd(a),
		newControlPlaneCmd(a),
		newWhoamiCmd(a),
		newTemplatesCmd(a),
		newFenceDeviceCmd(a),
		newCommandsCmd(a),
		newSigningKeysCmd(a),
		newMIBCmd(a),
	)
	a.wrapCommands(root)
	return root
}
