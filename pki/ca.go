package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a throwaway certificate authority: for `backstopd demo`, the
// tests and the benchmarks. Production uses the operator's PKI; nothing
// else in Backstop issues certificates.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewCA makes a CA certificate (ECDSA P-256) named name, valid for
// validFor.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Backstop throwaway CA"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

func newSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand never fails
	return n
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() []byte { return EncodeCertificate(ca.Cert.Raw) }

// Fingerprint is the CA certificate's SHA-256 fingerprint.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert.Raw) }

// Issue makes a server certificate for hosts (DNS names or IP addresses)
// and returns it and its key in PEM.
func (ca *CA) Issue(hosts []string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return EncodeCertificate(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// Files are the PEM files of a CA and a server certificate it issued.
type Files struct {
	CA, Cert, Key string
}

// WriteFiles writes ca.pem, and a server certificate for hosts as
// server.pem and server-key.pem, into dir (created, mode 0700).
func (ca *CA) WriteFiles(dir string, hosts []string, validFor time.Duration) (Files, error) {
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	if err := os.WriteFile(f.CA, ca.PEM(), 0o644); err != nil {
		return f, err
	}
	return f, ca.WriteServer(f, hosts, validFor)
}

// WriteServer issues a server certificate for hosts and writes it over
// f.Cert and f.Key: a rotation, as a PKI's renewal job does it (key
// first, then certificate, each replaced atomically).
func (ca *CA) WriteServer(f Files, hosts []string, validFor time.Duration) error {
	cert, key, err := ca.Issue(hosts, validFor)
	if err != nil {
		return err
	}
	if err := writeAtomic(f.Key, key, 0o600); err != nil {
		return err
	}
	return writeAtomic(f.Cert, cert, 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
