// Package pki is Backstop's transport security: the TLS settings of
// backstopd and of its clients, the server certificate reloaded from disk
// when it is rotated, the pin an enrollment token carries (the SHA-256
// fingerprint of the control plane's CA certificate), the agent's client
// certificate made from its Ed25519 identity key, and a throwaway CA for
// demos and tests.
//
// Nothing here is cryptography of its own: crypto/tls and crypto/x509 do
// the handshakes, the chain and name checks and the signatures; this
// package only chooses their settings and compares fingerprints.
package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Fingerprint is the SHA-256 digest of a certificate's DER bytes in lower
// case hex: what `openssl x509 -noout -fingerprint -sha256` prints, without
// the colons. Enrollment tokens carry the CA's fingerprint in this form.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// NormalizeFingerprint accepts a fingerprint as openssl prints it
// (colon-separated, upper case, "sha256:" or "SHA256 Fingerprint=" in
// front) or as Fingerprint makes it, and returns Fingerprint's form. It
// returns an error unless the result is 64 hex digits.
func NormalizeFingerprint(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.LastIndexByte(s, '='); i >= 0 {
		s = s[i+1:]
	}
	s = strings.ReplaceAll(strings.TrimPrefix(s, "sha256:"), ":", "")
	if len(s) != 2*sha256.Size {
		return "", fmt.Errorf("CA fingerprint %q: want a SHA-256 digest (64 hex digits)", s)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("CA fingerprint %q: not hex", s)
	}
	return s, nil
}

// ReadCertificates reads every CERTIFICATE block of a PEM file.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificates parses every CERTIFICATE block of PEM data; it fails
// when there is none.
func ParseCertificates(pemData []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, pemData = pem.Decode(pemData)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// EncodeCertificate returns a certificate as PEM.
func EncodeCertificate(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// CertPool reads a PEM file of CA certificates (BACKSTOP_CA_FILE) into a
// pool.
func CertPool(path string) (*x509.CertPool, error) {
	certs, err := ReadCertificates(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ClientConfig is the TLS configuration of backstopctl and the Go SDK:
// Go's defaults (TLS 1.2 or newer, the system's roots), or the CA
// certificates of caFile when it is not empty.
func ClientConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := CertPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// Explain turns the certificate errors of a TLS handshake into a sentence
// an operator can act on; other errors are returned as they are. caFile is
// the CA file the client used ("" for the system's roots) and flag names
// the option that sets it.
func Explain(err error, caFile, flag string) error {
	if err == nil {
		return nil
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var rec tls.RecordHeaderError
	trust := "the system's trusted CAs"
	if caFile != "" {
		trust = "the CAs in " + caFile
	}
	switch {
	case errors.As(err, &ua):
		subj := "?"
		if ua.Cert != nil {
			subj = ua.Cert.Issuer.String()
		}
		return fmt.Errorf("the server's TLS certificate is signed by an unknown authority (issuer %q): it is not one of %s; give the control plane's CA certificate with %s: %w", subj, trust, flag, err)
	case errors.As(err, &hn):
		names := "none"
		if hn.Certificate != nil {
			var all []string
			all = append(all, hn.Certificate.DNSNames...)
			for _, ip := range hn.Certificate.IPAddresses {
				all = append(all, ip.String())
			}
			if len(all) > 0 {
				names = strings.Join(all, ", ")
			}
		}
		return fmt.Errorf("the server's TLS certificate is not valid for %q (it names %s): use a URL with one of those names, or reissue the certificate: %w", hn.Host, names, err)
	case errors.As(err, &ci):
		return fmt.Errorf("the server's TLS certificate is not valid (%v): %w", ci.Error(), err)
	case errors.As(err, &rec):
		return fmt.Errorf("the server did not answer TLS (is it serving plain HTTP? then use an http:// URL): %w", err)
	}
	return err
}
