package nodeagent

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"time"

	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/pki"
)

// fileCA holds the control plane's CA certificate the enrollment token
// pinned, saved at enrollment: the agent trusts the server's certificate
// when it chains to it, across renewals, even when the server stops
// sending the CA.
const fileCA = "control_plane_ca.pem"

// transportTLS decides how the agent verifies the control plane and
// authenticates to it:
//
//   - a CA fingerprint pinned by the enrollment token (kept in the
//     identity after enrollment): the server's certificate must chain to
//     the CA with that fingerprint (saved in fileCA, or, at the first
//     contact, presented by the server) and name the host dialled;
//   - no pin (a token of a plain-HTTP control plane, or one made before
//     TLS): the CAs of caFile, else the system's, as any HTTPS client.
//
// Either way the agent presents a self-signed client certificate of its
// Ed25519 identity key: the control plane compares its key with the
// enrolled one (mutual TLS bound to the enrolled key pair).
type transportTLS struct {
	pinner *pki.Pinner    // nil: no pin
	roots  *x509.CertPool // nil: the system's
	cert   *tls.Certificate
}

func newTransportTLS(dir, pin, caFile string, key ed25519.PrivateKey, name string) (*transportTLS, error) {
	t := &transportTLS{}
	var err error
	if t.cert, err = pki.ClientCertificate(key, name); err != nil {
		return nil, err
	}
	if pin != "" {
		var known []*x509.Certificate
		switch cs, err := pki.ReadCertificates(filepath.Join(dir, fileCA)); {
		case err == nil:
			known = cs
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
		if t.pinner, err = pki.NewPinner(pin, known); err != nil {
			return nil, err
		}
		return t, nil
	}
	if caFile != "" {
		if t.roots, err = pki.CertPool(caFile); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// doer returns the HTTP client of one control plane URL.
func (t *transportTLS) doer(server string) (client.HttpRequestDoer, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, err
	}
	if t.pinner != nil && u.Scheme != "https" {
		return nil, fmt.Errorf("server %s: the enrollment token pins the control plane's TLS CA, so the agent speaks only https:// to it", server)
	}
	var cfg *tls.Config
	if t.pinner != nil {
		cfg = t.pinner.Config(t.cert, u.Hostname())
	} else {
		cert := t.cert
		cfg = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: t.roots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}
	}
	// HTTP/1.1 with kept-alive connections: a heartbeat never waits for a
	// handshake, and a long poll holds a connection of its own.
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long polls; every call has its own deadline
	}}, nil
}

// saveCA writes the CA the pin found, at enrollment.
func (t *transportTLS) saveCA(dir string) error {
	if t.pinner == nil {
		return nil
	}
	ca := t.pinner.CA()
	if ca == nil {
		return errors.New("enrolled over a connection that did not verify the pinned CA")
	}
	if err := writeFileAtomic(filepath.Join(dir, fileCA), pki.EncodeCertificate(ca.Raw)); err != nil {
		return err
	}
	return nil
}
