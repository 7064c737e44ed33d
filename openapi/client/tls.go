package client

import (
	"net/http"
	"time"

	"github.com/backstop-ha/backstop/pki"
)

// WithCAFile makes the client verify backstopd's TLS certificate with the
// PEM CA certificates in caFile (what backstopctl's --ca-file and
// BACKSTOP_CA_FILE name) instead of the system's; an empty caFile keeps
// the system's. It replaces the HTTP client, so give it before
// WithHTTPClient or not at all with it. Errors of a request against an
// unknown CA or a certificate of another name read well through
// ExplainTLS.
func WithCAFile(caFile string) ClientOption {
	return func(c *Client) error {
		cfg, err := pki.ClientConfig(caFile)
		if err != nil {
			return err
		}
		c.Client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     cfg,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
		}}
		return nil
	}
}

// ExplainTLS rewrites a request error caused by the server's certificate
// (unknown authority, name mismatch, expiry) into a sentence that says
// what to do; other errors are returned unchanged. caFile is the CA file
// the client was given ("" for the system's CAs).
func ExplainTLS(err error, caFile string) error {
	return pki.Explain(err, caFile, "WithCAFile (BACKSTOP_CA_FILE)")
}
