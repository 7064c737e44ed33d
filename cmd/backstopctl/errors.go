package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a command line the tool cannot act on (exit 2).
type usageError struct{ msg string }

// Error returns the message.
func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// failure marks an error returned by a command's own work (exit 1), as
// opposed to the errors cobra returns while parsing the command line.
type failure struct{ err error }

// Error returns the wrapped error's message.
func (e *failure) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e *failure) Unwrap() error { return e.err }

// hintedError adds a line of advice to an error.
type hintedError struct {
	err  error
	hint string
}

// Error returns the wrapped error's message; the hint is printed apart.
func (e *hintedError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e *hintedError) Unwrap() error { return e.err }

// problemError is an RFC 9457 problem the server answered.
type problemError struct {
	problem    client.Problem
	httpStatus int
	hint       string
}

func (e *problemError) status() int {
	if e.problem.Status != 0 {
		return e.problem.Status
	}
	return e.httpStatus
}

// Error renders the problem as "<status> <title>: <detail>".
func (e *problemError) Error() string {
	msg := e.headline()
	if d := e.detail(); d != "" {
		msg += ": " + d
	}
	return msg
}

// headline is "<status> <title>".
func (e *problemError) headline() string {
	title := e.problem.Title
	if title == "" {
		title = http.StatusText(e.status())
	}
	return fmt.Sprintf("%d %s", e.status(), title)
}

func (e *problemError) detail() string {
	if e.problem.Detail == nil {
		return ""
	}
	return *e.problem.Detail
}

func fieldErrors(p client.Problem) []client.FieldError {
	if p.Errors == nil {
		return nil
	}
	return *p.Errors
}

// restates tells whether a problem's detail only repeats its field
// errors' messages (the server puts the first one, or all of them, in it).
func restates(detail string, fes []client.FieldError) bool {
	for _, fe := range fes {
		if fe.Message != "" && strings.Contains(detail, fe.Message) {
			return true
		}
	}
	return false
}

// httpError is an answer that is neither the expected one nor a problem,
// such as an HTML page from a proxy.
type httpError struct {
	status      int
	contentType string
	body        []byte
}

// Error renders the status and the start of the body.
func (e *httpError) Error() string {
	msg := fmt.Sprintf("%d %s", e.status, http.StatusText(e.status))
	if snippet := bodySnippet(e.body); snippet != "" {
		msg += ": " + snippet
	}
	return msg
}

// bodySnippet returns the start of a body as one printable line.
func bodySnippet(body []byte) string {
	const maxLen = 200
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(body), "?"))
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxLen {
		s = string(r[:maxLen]) + "..."
	}
	return s
}

// transportError is a request that got no answer.
type transportError struct {
	server string
	reason string // empty, or why it stopped (timeout, interrupt)
	err    error
}

// Error names the server and what went wrong.
func (e *transportError) Error() string {
	if e.reason != "" {
		return fmt.Sprintf("server %s: %s: %v", e.server, e.reason, e.err)
	}
	return fmt.Sprintf("cannot reach server %s: %v", e.server, e.err)
}

// Unwrap returns the network error.
func (e *transportError) Unwrap() error { return e.err }

// reportError prints err to w and returns the exit status it calls for. cmd
// is the command that was run, for the usage hint.
func reportError(w io.Writer, cmd *cobra.Command, err error) int {
	code := exitUsage
	var f *failure
	var ue *usageError
	if errors.As(err, &ue) {
		code = exitUsage
	} else if errors.As(err, &f) {
		code = exitFailure
	}
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}

	var pe *problemError
	if errors.As(err, &pe) {
		// A validation problem's detail restates its field errors: print
		// each field error once, on its own line, and the detail only
		// when it says something they do not.
		if fes := fieldErrors(pe.problem); len(fes) > 0 {
			head := pe.headline()
			if d := pe.detail(); d != "" && !restates(d, fes) {
				head += ": " + d
			}
			fmt.Fprintf(w, "error: %s\n", head)
			for _, fe := range fes {
				fmt.Fprintf(w, "  %s: %s\n", fe.Location, fe.Message)
			}
		} else {
			fmt.Fprintf(w, "error: %s\n", pe.Error())
		}
		if pe.problem.RequestId != nil && *pe.problem.RequestId != "" {
			fmt.Fprintf(w, "request id: %s\n", *pe.problem.RequestId)
		}
		if pe.hint != "" {
			fmt.Fprintf(w, "hint: %s\n", pe.hint)
		}
	} else {
		fmt.Fprintf(w, "error: %v\n", err)
	}
	var he *hintedError
	if errors.As(err, &he) {
		fmt.Fprintf(w, "hint: %s\n", he.hint)
	}
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}
