package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop/nodeagent"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{
		"BACKSTOP_SERVER":       "http://cp1:8080, http://cp2:8080",
		"BACKSTOP_DATA_DIR":     "/tmp/agent",
		"BACKSTOP_ENROLL_TOKEN": "bse_x.y",
		"BACKSTOP_PATH_PORT":    "7500",
	}
	o, err := parseFlags(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if !slices.Equal(c.Servers, []string{"http://cp1:8080", "http://cp2:8080"}) || c.DataDir != "/tmp/agent" ||
		c.EnrollToken != "bse_x.y" || c.PathPort != 7500 || c.MetricsListen != "127.0.0.1:9406" || c.Watchdog != "" ||
		o.logFormat != "json" || c.Version != version {
		t.Fatalf("from the environment: %+v %+v", c, o)
	}
	o, err = parseFlags([]string{"--server", "https://cp:8443", "--data-dir", "/d", "--path-port", "9000",
		"--metrics-listen", "off", "--watchdog", "/dev/watchdog", "--log-format", "text"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c = o.cfg
	if !slices.Equal(c.Servers, []string{"https://cp:8443"}) || c.DataDir != "/d" || c.PathPort != 9000 ||
		c.MetricsListen != "" || c.Watchdog != "/dev/watchdog" || o.logFormat != "text" {
		t.Fatalf("flags over the environment: %+v %+v", c, o)
	}
	if c.DataDir == nodeagent.DefaultConfig().DataDir {
		t.Fatal("data dir not overridden")
	}
}

func TestParseFlagsErrors(t *testing.T) {
	none := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--server"},
		{[]string{"--server", "cp:8080"}, "not an http(s) URL"},
		{[]string{"--server", "http://cp", "--path-port", "x"}, "--path-port"},
		{[]string{"--server", "http://cp", "--path-port", "70000"}, "out of range"},
		{[]string{"--server", "http://cp", "--log-format", "xml"}, "--log-format"},
		{[]string{"--server", "http://cp", "--log-level", "loud"}, "--log-level"},
		{[]string{"--server", "http://cp", "extra"}, "unexpected argument"},
	} {
		_, err := parseFlags(tc.args, none, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error about %s", tc.args, err, tc.want)
		}
	}
	if o, err := parseFlags([]string{"--version"}, none, io.Discard); err != nil || !o.version {
		t.Fatalf("--version: %v", err)
	}
}
