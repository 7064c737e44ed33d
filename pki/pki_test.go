package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// server starts an HTTPS server on f's files whose handler answers the
// client certificate's subject.
func server(t *testing.T, f Files, withCA bool) (string, *Reloader) {
	t.Helper()
	cfg := ReloaderConfig{CertFile: f.Cert, KeyFile: f.Key, Every: time.Nanosecond}
	if withCA {
		cfg.CAFile = f.CA
	}
	r, err := NewReloader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{TLSConfig: ServerConfig(r), Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if len(req.TLS.PeerCertificates) > 0 {
			io.WriteString(w, req.TLS.PeerCertificates[0].Subject.CommonName)
		}
	})}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	s := "https://" + ln.Addr().String()
	return s, r
}

func newFiles(t *testing.T) (*CA, Files) {
	t.Helper()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteFiles(t.TempDir(), []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca, f
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestPinnedAgent: an agent pinning the CA's fingerprint trusts the
// server although no root store holds the CA (backstopd sends it), and
// presents its Ed25519 client certificate; another fingerprint refuses
// the server with ErrPinMismatch.
func TestPinnedAgent(t *testing.T) {
	ca, f := newFiles(t)
	s, _ := server(t, f, true)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cc, err := ClientCertificate(key, "node1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPinner(ca.Fingerprint(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: p.Config(cc, "127.0.0.1")}}
	got, err := get(c, s)
	if err != nil || got != "node1" {
		t.Fatalf("pinned GET = %q, %v; want node1", got, err)
	}
	if p.CA() == nil || p.CA().Equal(ca.Cert) == false {
		t.Fatalf("pinner did not record the CA")
	}

	other, _ := NewCA("other", time.Hour)
	p2, _ := NewPinner(other.Fingerprint(), nil)
	c2 := &http.Client{Transport: &http.Transport{TLSClientConfig: p2.Config(nil, "127.0.0.1")}}
	if _, err := get(c2, s); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: err = %v, want ErrPinMismatch", err)
	}
}

// TestPinnerChecksName: the pinned CA vouches for a certificate only
// under the names it bears.
func TestPinnerChecksName(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteFiles(t.TempDir(), []string{"cp.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := server(t, f, true)
	p, _ := NewPinner(ca.Fingerprint(), nil)
	c := &http.Client{Transport: &http.Transport{DialTLSContext: p.DialTLSContext(&net.Dialer{}, nil)}}
	_, err = get(c, s)
	if err == nil || !strings.Contains(err.Error(), "not valid for") {
		t.Fatalf("name mismatch: err = %v", err)
	}
}

// TestReload: a certificate rotated on disk is served to the next
// connection without a restart, and the pin (the CA) stays.
func TestReload(t *testing.T) {
	ca, f := newFiles(t)
	s, r := server(t, f, true)
	before := r.Leaf().SerialNumber
	pin := r.Pin()
	if pin != ca.Fingerprint() {
		t.Fatalf("pin %s, want the CA's %s", pin, ca.Fingerprint())
	}
	// A half-written rotation (key replaced, certificate not yet) keeps
	// the old certificate.
	if err := os.WriteFile(f.Key, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, _ := CertPool(f.CA)
	fresh := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	if _, err := get(fresh(), s); err != nil {
		t.Fatalf("during a half-written rotation: %v", err)
	}
	if err := ca.WriteServer(f, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// Modification times may be coarse; make the change visible.
	future := time.Now().Add(time.Minute)
	os.Chtimes(f.Cert, future, future)
	resp, err := fresh().Get(s)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := resp.TLS.PeerCertificates[0].SerialNumber
	if after.Cmp(before) == 0 {
		t.Fatalf("still serving serial %v after the rotation", before)
	}
	if r.Pin() != pin {
		t.Fatalf("pin changed on a rotation under the same CA")
	}
}

// TestExplain: backstopctl's message for a server signed by a CA it does
// not know names the cure.
func TestExplain(t *testing.T) {
	_, f := newFiles(t)
	s, _ := server(t, f, false)
	_, err := get(&http.Client{}, s)
	msg := Explain(err, "", "--ca-file").Error()
	if !strings.Contains(msg, "unknown authority") || !strings.Contains(msg, "--ca-file") {
		t.Fatalf("message %q", msg)
	}
	if _, err := NormalizeFingerprint("SHA256 Fingerprint=" + strings.ToUpper(strings.Repeat("ab:", 31)) + "AB"); err != nil {
		t.Fatal(err)
	}
}
