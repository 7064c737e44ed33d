package main

import (
	"strings"
	"testing"
)

// backstopd serves HTTPS unless plain HTTP is asked for, and says how
// to fix a half-given TLS setting.
func TestParseFlagsTLS(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{"BACKSTOP_DATABASE_URL": "postgres://db/x", "BACKSTOP_SECRET_KEY": "0123456789abcdef0123456789abcdef"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, c := range []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"nothing", nil, env(), "--tls-cert and --tls-key"},
		{"plain", []string{"--insecure-http"}, env(), ""},
		{"plain from env", nil, env("BACKSTOP_INSECURE_HTTP", "true"), ""},
		{"tls", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, env(), ""},
		{"tls from env", nil, env("BACKSTOP_TLS_CERT", "c.pem", "BACKSTOP_TLS_KEY", "k.pem", "BACKSTOP_TLS_CA", "ca.pem"), ""},
		{"cert without key", []string{"--tls-cert", "c.pem"}, env(), "go together"},
		{"both", []string{"--insecure-http", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, env(), "exclude each other"},
		{"ca alone", []string{"--insecure-http", "--tls-ca", "ca.pem"}, env(), "--tls-ca needs"},
	} {
		_, err := parseFlags(c.args, c.getenv, false)
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.wantErr)
		}
	}
	// The demo makes its own throwaway CA: no TLS flag needed.
	if _, err := parseFlags(nil, func(string) string { return "" }, true); err != nil {
		t.Errorf("demo: %v", err)
	}
}
