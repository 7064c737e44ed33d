package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ReloaderConfig configures a Reloader.
type ReloaderConfig struct {
	// CertFile and KeyFile are the server's certificate (chain) and key,
	// PEM. Both required.
	CertFile, KeyFile string
	// CAFile, if set, is the CA certificate that issued CertFile. It is
	// what enrollment tokens pin, and backstopd sends it after its chain
	// so that an agent can find the pinned CA in the handshake on its
	// first contact. Without it the last certificate of CertFile is
	// pinned (the certificate itself when it is alone, which then must be
	// re-pinned when it is rotated).
	CAFile string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Every is how often the files' modification times are checked, at
	// most once per handshake (default 1 s).
	Every time.Duration
}

// Reloader serves the server certificate from disk and reloads it when its
// files change: certificate rotation (cert-manager, certbot, a corporate
// PKI) needs no restart. The files are checked on a handshake at most once
// per Every; a file caught half-written fails to load, is logged, and the
// previous certificate stays in use until the next check.
type Reloader struct {
	cfg ReloaderConfig
	log *slog.Logger
	// mu guards the fields below.
	mu      sync.Mutex
	cert    *tls.Certificate
	pin     string
	stamp   string
	checked time.Time
}

// NewReloader loads the certificate once; an error here stops backstopd.
func NewReloader(cfg ReloaderConfig) (*Reloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	r := &Reloader{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.Default()
	}
	stamp, err := r.stampFiles()
	if err != nil {
		return nil, err
	}
	cert, pin, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.pin, r.stamp, r.checked = cert, pin, stamp, time.Now()
	return r, nil
}

// stampFiles sums up the files' sizes and modification times.
func (r *Reloader) stampFiles() (string, error) {
	var b bytes.Buffer
	for _, p := range []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.CAFile} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (r *Reloader) load() (*tls.Certificate, string, error) {
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return nil, "", fmt.Errorf("TLS certificate: %w", err)
	}
	leaf := cert.Leaf // set by LoadX509KeyPair since Go 1.23
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, "", fmt.Errorf("TLS certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	pinDER := cert.Certificate[len(cert.Certificate)-1]
	if r.cfg.CAFile != "" {
		cas, err := ReadCertificates(r.cfg.CAFile)
		if err != nil {
			return nil, "", fmt.Errorf("TLS CA: %w", err)
		}
		ca := cas[0]
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		inter := x509.NewCertPool()
		for _, der := range cert.Certificate[1:] {
			if c, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, "", fmt.Errorf("TLS certificate %s is not issued by the CA in %s: %w", r.cfg.CertFile, r.cfg.CAFile, err)
		}
		pinDER = ca.Raw
		if !bytes.Equal(cert.Certificate[len(cert.Certificate)-1], ca.Raw) {
			cert.Certificate = append(cert.Certificate, ca.Raw)
		}
	}
	return &cert, Fingerprint(pinDER), nil
}

// maybeReload reloads the files when they changed since the last check.
func (r *Reloader) maybeReload(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.checked) < r.cfg.Every {
		return
	}
	r.checked = now
	stamp, err := r.stampFiles()
	if err != nil {
		r.log.Warn("TLS certificate files unreadable; serving the previous certificate", "err", err)
		return
	}
	if stamp == r.stamp {
		return
	}
	cert, pin, err := r.load()
	if err != nil {
		// Perhaps caught between the writes of the certificate and the
		// key: the next check retries.
		r.log.Warn("TLS certificate changed on disk but does not load; serving the previous certificate", "err", err)
		return
	}
	r.stamp = stamp
	if pin != r.pin {
		r.log.Warn("the pinned TLS certificate changed: new enrollment tokens pin it; agents enrolled before trust the previous one only",
			"fingerprint", pin, "previous", r.pin)
	}
	r.cert, r.pin = cert, pin
	r.log.Info("TLS certificate reloaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter, "serial", cert.Leaf.SerialNumber.String())
}

// GetCertificate is tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload(time.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, nil
}

// Pin is the fingerprint enrollment tokens carry: of the CA certificate
// (CAFile), else of the last certificate of the chain.
func (r *Reloader) Pin() string {
	r.maybeReload(time.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pin
}

// Leaf is the certificate served now.
func (r *Reloader) Leaf() *x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert.Leaf
}

// ServerConfig is backstopd's TLS configuration: TLS 1.2 or newer (Go's
// cipher suites), the certificate from r, and a client certificate asked
// for but not required. Agents present a self-signed certificate of their
// enrolled Ed25519 key; the server checks its key against the enrolled one
// per request (server.Server's gate), not against a CA, so no chain is
// verified here. crypto/tls has already checked that the client holds the
// certificate's private key (its CertificateVerify signature).
func ServerConfig(r *Reloader) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
