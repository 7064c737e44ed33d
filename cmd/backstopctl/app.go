package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/pki"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	server  string
	token   string
	output  string
	timeout time.Duration
	caFile  string
}

// app is the state of one invocation: its streams, its options and, once a
// command runs, the API client.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	opts globalOptions
	api  *client.ClientWithResponses
	// stream is the client of long-lived requests (the event stream):
	// no overall timeout, only one for the response headers.
	stream *client.Client
	// quietServerNote silences the /v1 note (shell completion).
	quietServerNote bool
}

// wrapCommands makes every runnable command below root set the client up
// before it runs and mark what it returns as a failure of the request
// (exit 1) rather than a usage error (exit 2). Commands cobra adds later
// (help, completion) are left alone.
func (a *app) wrapCommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		a.wrapCommands(c)
	}
	if cmd.RunE == nil {
		return
	}
	if !cmd.HasSubCommands() {
		a.addCompletion(cmd)
	}
	inner := cmd.RunE
	needsAPI := !cmd.HasSubCommands()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if needsAPI {
			if err := a.setup(cmd); err != nil {
				return err
			}
		}
		err := inner(cmd, args)
		if err == nil {
			return nil
		}
		var ue *usageError
		if errors.As(err, &ue) {
			return err
		}
		return &failure{err: err}
	}
}

// setup resolves the global options against the environment, checks them and
// builds the API client.
func (a *app) setup(cmd *cobra.Command) error {
	flags := cmd.Flags()
	if !flags.Changed("server") {
		if v := strings.TrimSpace(a.getenv(envServer)); v != "" {
			a.opts.server = v
		}
	}
	if !flags.Changed("token") {
		a.opts.token = a.getenv(envToken)
	}
	if !flags.Changed("ca-file") {
		a.opts.caFile = strings.TrimSpace(a.getenv(envCAFile))
	}
	a.opts.token = strings.TrimSpace(a.opts.token)
	a.opts.server = strings.TrimRight(a.opts.server, "/")

	u, err := url.Parse(a.opts.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("server %q is not an http:// or https:// URL", a.opts.server)
	}
	// The generated client adds /v1/... itself: a server URL copied from
	// an API path (http://host:8080/v1) would ask for /v1/v1/... and get
	// a 404. Take the base URL and say so, once.
	if p := strings.TrimRight(u.Path, "/"); p == "/v1" || strings.HasSuffix(p, "/v1") {
		u.Path = strings.TrimSuffix(p, "/v1")
		u.RawQuery, u.Fragment = "", ""
		base := u.String()
		if !a.quietServerNote {
			fmt.Fprintf(a.stderr, "note: --server is the base URL without /v1 (the API paths start with /v1); using %s\n", base)
		}
		a.opts.server = base
	}
	switch a.opts.output {
	case outputTable, outputJSON, outputYAML:
	default:
		return usageErrorf("output format %q: want table, json or yaml", a.opts.output)
	}
	if a.opts.timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}

	tlsCfg, err := pki.ClientConfig(a.opts.caFile)
	if err != nil {
		return usageErrorf("--ca-file: %v", err)
	}
	hc := &http.Client{Timeout: a.opts.timeout, Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}}
	api, err := client.NewClientWithResponses(a.opts.server,
		client.WithHTTPClient(hc),
		client.WithRequestEditorFn(a.editRequest))
	if err != nil {
		return usageErrorf("server %q: %v", a.opts.server, err)
	}
	a.api = api
	sc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: a.opts.timeout,
		TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}}
	if a.stream, err = client.NewClient(a.opts.server, client.WithHTTPClient(sc), client.WithRequestEditorFn(a.editRequest)); err != nil {
		return usageErrorf("server %q: %v", a.opts.server, err)
	}
	return nil
}

// editRequest adds the headers every request carries.
func (a *app) editRequest(_ context.Context, req *http.Request) error {
	req.Header.Set("User-Agent", "backstopctl")
	req.Header.Set("Accept", "application/json, application/problem+json")
	if a.opts.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.opts.token)
	}
	return nil
}

// apiResponse is what every generated *XxxResponse offers.
type apiResponse interface {
	StatusCode() int
	ContentType() string
	GetBody() []byte
}

// check turns a call that did not answer want into an error: the request
// could not be made, or the server answered something else (usually a
// problem). When it returns nil, the typed body for want is set.
func (a *app) check(resp apiResponse, err error, want int) error {
	if err != nil {
		return a.requestError(err)
	}
	if resp.StatusCode() != want {
		return a.responseError(resp)
	}
	if want != http.StatusNoContent && !isJSON(resp.ContentType()) {
		return fmt.Errorf("unexpected answer from %s: status %d with Content-Type %q", a.opts.server, resp.StatusCode(), resp.ContentType())
	}
	return nil
}

// requestError explains an error returned by the generated client: the
// server could not be reached, did not answer in time, or answered a body
// that does not parse.
func (a *app) requestError(err error) error {
	var uerr *url.Error
	if !errors.As(err, &uerr) {
		return fmt.Errorf("invalid answer from server %s: %w", a.opts.server, err)
	}
	// An unknown CA or a name mismatch says what to do about it.
	te := &transportError{server: a.opts.server, err: pki.Explain(uerr.Err, a.opts.caFile, "--ca-file or "+envCAFile)}
	switch {
	case errors.Is(err, context.Canceled):
		te.reason = "interrupted"
	case uerr.Timeout():
		te.reason = fmt.Sprintf("no answer within %s (--timeout)", a.opts.timeout)
	}
	return te
}

// responseError turns a non-success answer into an error, a *problemError
// when the body is an RFC 9457 problem.
func (a *app) responseError(resp apiResponse) error {
	status := resp.StatusCode()
	if p := client.ProblemOf(resp.ContentType(), resp.GetBody()); p != nil {
		pe := &problemError{problem: *p, httpStatus: status}
		switch status {
		case http.StatusUnauthorized:
			if a.opts.token == "" {
				pe.hint = "no API token was given: use --token or set " + envToken
			}
		case http.StatusPreconditionFailed:
			pe.hint = "the object changed since that ETag was read: read it again and retry with the new ETag"
		}
		return pe
	}
	return &httpError{status: status, contentType: resp.ContentType(), body: resp.GetBody()}
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// noteReplay tells the operator when the server answered an idempotent
// replay instead of acting again.
func (a *app) noteReplay(resp *http.Response) {
	if resp != nil && strings.EqualFold(resp.Header.Get("Idempotent-Replayed"), "true") {
		fmt.Fprintln(a.stderr, "note: the server replayed its answer to an earlier request with the same idempotency key; nothing new was created")
	}
}

// shownSecret is how a secret shown once (a token, a webhook secret, an
// enrollment token) is printed: itself, or, in an idempotent replay, which
// never repeats it, why it is missing.
func shownSecret(secret string) string {
	if secret == "" {
		return "(not shown again: this answer replays an earlier one, which alone held the secret)"
	}
	return secret
}

// retryHint adds, to an error of a create request whose outcome is unknown
// (no answer, or a server error), how to retry it without doing it twice.
func retryHint(err error, key string) error {
	if !outcomeUnknown(err) {
		return err
	}
	return &hintedError{err: err, hint: "the request may have been applied; run the same command again (it reuses idempotency key " + key + ") or pass --idempotency-key " + key + " to retry it safely"}
}

// groupCmd makes a command that only holds subcommands.
func groupCmd(use, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Aliases: aliases,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
}

// positional checks that a command got exactly the named arguments.
func positional(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usageErrorf("missing argument %s", strings.Join(names[len(args):], " "))
		}
		if len(args) > len(names) {
			return usageErrorf("unexpected argument %q", args[len(names)])
		}
		return nil
	}
}

// parseID parses a UUID argument.
func parseID(what, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, usageErrorf("%s %q is not a UUID", what, s)
	}
	return id, nil
}

// enumFlag is a string flag restricted to a set of values.
type enumFlag struct {
	allowed []string
	value   string
}

func newEnumFlag(allowed ...string) *enumFlag { return &enumFlag{allowed: allowed} }

// String returns the value set, for pflag.Value.
func (e *enumFlag) String() string { return e.value }

// Type lists the allowed values, shown in the help as the flag's type.
func (e *enumFlag) Type() string { return strings.Join(e.allowed, "|") }

// Set accepts one of the allowed values.
func (e *enumFlag) Set(s string) error {
	for _, v := range e.allowed {
		if s == v {
			e.value = s
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(e.allowed, ", "))
}

// ptrIf returns &v when set, else nil.
func ptrIf[T any](set bool, v T) *T {
	if !set {
		return nil
	}
	return &v
}

// ifMatchFlag adds --if-match to a command that changes or deletes.
func addIfMatchFlag(cmd *cobra.Command) *string {
	var v string
	cmd.Flags().StringVar(&v, "if-match", "", "act only if the object's ETag is still this one (get prints it; a bare 3 is sent as \"3\")")
	return &v
}

// ifMatch returns the If-Match value to send, nil when the flag is unset.
// A bare version such as 3 is quoted into the entity tag "3", so operators
// need not fight their shell's quoting.
func ifMatch(cmd *cobra.Command, v *string) *string {
	if !cmd.Flags().Changed("if-match") {
		return nil
	}
	tag := strings.TrimSpace(*v)
	if tag != "*" && !strings.HasPrefix(tag, `"`) && !strings.HasPrefix(tag, `W/"`) {
		tag = `"` + tag + `"`
	}
	return &tag
}
