package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// A create (POST) carries an Idempotency-Key: the server answers a second
// request with the same key and body with the first answer instead of
// acting twice. The key must therefore survive the invocation whose
// request got no answer (a timeout, a dropped connection, a 5xx), so that
// running the same command again retries it rather than doing it again.
//
// backstopctl keeps, while a create is in flight, a file named after a
// hash of the request (server, token, operation and body) holding the key
// it sent, and removes it once the server answered definitely (success or
// a 4xx). A later invocation of the very same request finds the file and
// sends the same key. A key is not derived from the request alone: that
// would make a deliberate second create of the same object (after deleting
// the first) replay the first answer for 24 hours. The files live in
// $XDG_CACHE_HOME/backstopctl/pending (default ~/.cache/...) and are
// ignored after 23 hours, before the server forgets the key.

// pendingKeyTTL is how long a pending key is reused; the server keeps keys
// for 24 hours.
const pendingKeyTTL = 23 * time.Hour

// idempotencyFlag adds --idempotency-key to a create command.
type idempotencyFlag struct {
	a   *app
	key string

	pending string // the pending file of the request in flight, if any
}

func addIdempotencyFlag(a *app, cmd *cobra.Command) *idempotencyFlag {
	f := &idempotencyFlag{a: a}
	cmd.Flags().StringVar(&f.key, "idempotency-key", "",
		"Idempotency-Key header (default: a new key, or the key of an earlier run of this same request that got no answer)")
	return f
}

// value returns the key to send for the request op with body (JSON bytes
// or a value to marshal): the flag's, the pending key of an earlier
// unanswered run of the same request, or a new one, recorded as pending.
func (f *idempotencyFlag) value(cmd *cobra.Command, op string, body any) (string, error) {
	if cmd.Flags().Changed("idempotency-key") {
		if n := len(f.key); n < 1 || n > 255 {
			return "", usageErrorf("--idempotency-key must be 1 to 255 characters")
		}
		return f.key, nil
	}
	dir := f.a.pendingDir()
	if dir == "" {
		return uuid.NewString(), nil
	}
	f.pending = filepath.Join(dir, f.a.requestHash(op, body))
	if fi, err := os.Stat(f.pending); err == nil && time.Since(fi.ModTime()) < pendingKeyTTL {
		if b, err := os.ReadFile(f.pending); err == nil {
			if key := strings.TrimSpace(string(b)); key != "" {
				fmt.Fprintf(f.a.stderr, "note: an earlier run of this same request got no answer; retrying it with its idempotency key %s, so it is not done twice\n", key)
				return key, nil
			}
		}
	}
	key := uuid.NewString()
	if err := os.MkdirAll(dir, 0o700); err == nil {
		_ = os.WriteFile(f.pending, []byte(key+"\n"), 0o600)
	}
	return key, nil
}

// settle records the request's outcome: a definite answer removes the
// pending key, an unknown outcome keeps it for the next run. It returns
// err with the retry hint when the outcome is unknown.
func (f *idempotencyFlag) settle(err error, key string) error {
	if err != nil && outcomeUnknown(err) {
		return retryHint(err, key)
	}
	if f.pending != "" {
		_ = os.Remove(f.pending)
	}
	return err
}

// pendingDir is where pending keys are kept ("" when there is no home).
func (a *app) pendingDir() string {
	if d := a.getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "backstopctl", "pending")
	}
	if h := a.getenv("HOME"); h != "" && filepath.IsAbs(h) {
		return filepath.Join(h, ".cache", "backstopctl", "pending")
	}
	return ""
}

// requestHash names a request: the server, a hash of the token (two
// tokens' keys are separate on the server too), the operation and the
// body.
func (a *app) requestHash(op string, body any) string {
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	default:
		b, _ = json.Marshal(v)
	}
	tok := sha256.Sum256([]byte(a.opts.token))
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%x\n%s\n", a.opts.server, tok, op)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// outcomeUnknown tells whether a create's error leaves open whether the
// server acted: no answer, or a server error.
func outcomeUnknown(err error) bool {
	var te *transportError
	var pe *problemError
	var he *httpError
	return errors.As(err, &te) ||
		(errors.As(err, &pe) && pe.status() >= 500) ||
		(errors.As(err, &he) && he.status >= 500)
}
