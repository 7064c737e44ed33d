package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"

	"github.com/backstop-ha/backstop"
)

// Agents authenticate with two things: the bearer credential enrollment
// gave them, and, when backstopd terminates TLS itself
// (Config.AgentClientCert), a TLS client certificate whose public key is
// the Ed25519 key the node enrolled with. crypto/tls has checked that the
// client holds that key's private half (the handshake's CertificateVerify);
// the gate compares the key with the enrolled one on every request. A
// credential sniffed or copied off a node without its key is refused.
//
// The bearer credential stays: it names the node in one indexed lookup,
// it is what can be revoked (re-enrollment replaces it) without touching
// the agent's key, and it still authenticates agents when plain HTTP was
// asked for (--insecure-http, loopback tests) where there is no client
// certificate to check.

type clientKeyKey struct{}

// withClientKey records the Ed25519 key of the request's TLS client
// certificate, if any, for AgentEnroll.
func withClientKey(r *http.Request) *http.Request {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return r
	}
	k, ok := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), clientKeyKey{}, k))
}

func clientKeyFrom(ctx context.Context) (ed25519.PublicKey, bool) {
	k, ok := ctx.Value(clientKeyKey{}).(ed25519.PublicKey)
	return k, ok
}

// checkClientKey refuses an agent request whose TLS client certificate
// is missing or not of the key enrolled (enrolled may be empty for nodes
// enrolled before keys were recorded; there is nothing to compare then).
func (s *Server) checkClientKey(ctx context.Context, a backstop.AgentIdentity) error {
	if !s.agentClientCert {
		return nil
	}
	k, ok := clientKeyFrom(ctx)
	if !ok {
		return fmt.Errorf("%w: agent %q sent its credential without a TLS client certificate; agents present a certificate of the key they enrolled with", backstop.ErrUnauthenticated, a.NodeName)
	}
	if !bytes.Equal(k, a.PublicKey) {
		return fmt.Errorf("%w: the TLS client certificate is not of the key node %q enrolled with; the credential is refused without that key", backstop.ErrUnauthenticated, a.NodeName)
	}
	return nil
}

// checkEnrollKey refuses an enrollment over TLS whose client certificate
// is missing or of another key than the one it enrolls: the agent proves
// it holds the key before the control plane binds the node to it.
func checkEnrollKey(ctx context.Context, required bool, pub []byte) error {
	if !required {
		return nil
	}
	k, ok := clientKeyFrom(ctx)
	if !ok {
		return fmt.Errorf("%w: enroll over TLS with a client certificate of the key you enroll (backstop-agent does)", backstop.ErrUnauthenticated)
	}
	if !bytes.Equal(k, pub) {
		return fmt.Errorf("%w: the TLS client certificate's key is not the public_key being enrolled", backstop.ErrUnauthenticated)
	}
	return nil
}

// enrollPin is what enrollment tokens end with: the signing key's
// fingerprint and, when TLS is on, the CA's, dot-separated
// (bse_<secret>.<key fingerprint>.<CA fingerprint>).
func enrollPin(key, ca func() string) func() string {
	if ca == nil {
		return key
	}
	return func() string { return key() + "." + ca() }
}
