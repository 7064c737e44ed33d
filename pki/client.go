package pki

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"
)

// ErrPinMismatch is returned by a Pinner's VerifyConnection when no
// certificate of the server's handshake (nor the CA saved at enrollment)
// has the pinned fingerprint: the server is not the control plane that
// issued the enrollment token, or the token was mistyped.
var ErrPinMismatch = errors.New("the server's TLS certificate chain holds no CA with the fingerprint the enrollment token pins")

// Pinner verifies a server against a pinned CA fingerprint, as an agent
// does: the CA is the certificate with that fingerprint, either one the
// agent saved at enrollment or one the server presents in its chain (an
// agent's first contact), and the server's certificate must chain to it
// and name the host dialled. A certificate pinned itself (a lone
// self-signed server certificate) is accepted as it is.
type Pinner struct {
	pin   string
	known []*x509.Certificate
	// mu guards the field below.
	mu sync.Mutex
	ca *x509.Certificate
}

// NewPinner pins fingerprint (any form NormalizeFingerprint accepts);
// known are CA certificates saved before (may be nil).
func NewPinner(fingerprint string, known []*x509.Certificate) (*Pinner, error) {
	fp, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &Pinner{pin: fp, known: known}, nil
}

// Pin returns the pinned fingerprint.
func (p *Pinner) Pin() string { return p.pin }

// CA returns the pinned certificate once a handshake found it.
func (p *Pinner) CA() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ca
}

// Config returns a client TLS configuration for the server host (a name
// or an IP address) that verifies with p and presents cert (may be nil)
// as the client certificate.
func (p *Pinner) Config(cert *tls.Certificate, host string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		// Go's own chain verification is replaced, not skipped:
		// VerifyConnection verifies the chain against the pinned CA,
		// with the host name, on every handshake.
		InsecureSkipVerify: true, //nolint:gosec // see above
		VerifyConnection:   func(cs tls.ConnectionState) error { return p.verify(cs, host) },
	}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// DialTLSContext returns an http.Transport.DialTLSContext that connects
// with d and handshakes with Config(cert, host of the address dialled).
func (p *Pinner) DialTLSContext(d *net.Dialer, cert *tls.Certificate) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		td := &tls.Dialer{NetDialer: d, Config: p.Config(cert, host)}
		return td.DialContext(ctx, network, addr)
	}
}

func (p *Pinner) verify(cs tls.ConnectionState, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no TLS certificate")
	}
	leaf := cs.PeerCertificates[0]
	var ca *x509.Certificate
	for _, c := range append(append([]*x509.Certificate{}, p.known...), cs.PeerCertificates...) {
		if Fingerprint(c.Raw) == p.pin {
			ca = c
			break
		}
	}
	if ca == nil {
		var got []string
		for _, c := range cs.PeerCertificates {
			got = append(got, fmt.Sprintf("%q sha256 %s", c.Subject.String(), Fingerprint(c.Raw)))
		}
		return fmt.Errorf("%w: pinned sha256 %s; server %s presented [%s] (is --server the right control plane, and does backstopd send its CA, --tls-ca?)",
			ErrPinMismatch, p.pin, host, strings.Join(got, "; "))
	}
	now := time.Now()
	if bytes.Equal(ca.Raw, leaf.Raw) {
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return fmt.Errorf("the server's pinned TLS certificate is valid from %s to %s only", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	} else {
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return Explain(err, "the pinned CA "+ca.Subject.String(), "the enrollment token")
		}
	}
	p.mu.Lock()
	p.ca = ca
	p.mu.Unlock()
	return nil
}

// ClientCertificate makes the agent's TLS client certificate: self-signed
// by its Ed25519 identity key, the key it enrolled with. The control plane
// trusts no issuer here; it compares the certificate's public key with the
// node's enrolled key, and crypto/tls has checked that the agent holds the
// private key. A sniffed agent credential is thus useless without the key.
func ClientCertificate(key ed25519.PrivateKey, name string) (*tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0), // the key, not the certificate, is the identity; it is made anew at each start
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("agent client certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
