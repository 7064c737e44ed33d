package main

import (
	"net/http"
	"strings"
	"testing"
)

const (
	cfgCluster   = "0195f7a4-0000-7000-8000-0000000000c1"
	cfgHierarchy = "0195f7a4-3333-7000-8000-0000000000c1"
	cfgNode      = "0195f7a4-1111-7000-8000-0000000000c1"
)

// A version as backstopd answers it: main.cf modified (with its diff), a
// binary map with checksums only.
const cfgVersion = `{"resource":"config","version":2,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","size":30,
 "secret":false,"node_id":"` + cfgNode + `","captured_at":"2026-12-08T00:30:00Z","files":[
  {"path":"/etc/postfix/main.cf","change":"modified","mode":420,"size":15,"sha256":"aaaa","previous_sha256":"bbbb","binary":false,
   "diff":"--- /etc/postfix/main.cf (v1)\n+++ /etc/postfix/main.cf (v2)\n@@ -1 +1 @@\n-myhostname = a\n+myhostname = b\n","content":"bXlob3N0bmFtZSA9IGIK"},
  {"path":"/etc/postfix/x.db","change":"modified","mode":420,"size":15,"sha256":"cccc","previous_sha256":"dddd","binary":true},
  {"path":"/etc/postfix/master.cf","change":"unchanged","mode":420,"size":0,"sha256":"eeee","binary":false}]}`

func TestHierarchyConfig(t *testing.T) {
	base := "/v1/clusters/" + cfgCluster + "/hierarchies/" + cfgHierarchy + "/config-versions"
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET " + base: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"items":[`+cfgVersion+`]}`)
		},
		"GET " + base + "/config/2": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, cfgVersion)
		},
		"GET /v1/clusters/" + cfgCluster + "/nodes": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"items":[{"id":"`+cfgNode+`","cluster_id":"`+cfgCluster+`","name":"mx1","state":"up","version":1,
				"created_at":"2026-12-08T00:00:00Z","updated_at":"2026-12-08T00:00:00Z"}]}`)
		},
	})
	res := invoke(t, f.srv.URL, "", "hierarchies", "config", cfgCluster, cfgHierarchy)
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	for _, want := range []string{"RESOURCE", "config", "2", "mx1", "main.cf modified, x.db modified", "9f86d081884c"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, res.stdout)
		}
	}
	if strings.Contains(res.stdout, "master.cf") {
		t.Errorf("an unchanged file is listed as a change:\n%s", res.stdout)
	}
	res = invoke(t, f.srv.URL, "", "hierarchies", "config", cfgCluster, cfgHierarchy, "--diff")
	for _, want := range []string{"config version 2", "-myhostname = a", "+myhostname = b", "x.db sha256 cccc (was dddd) [checksums only]"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("--diff lacks %q:\n%s", want, res.stdout)
		}
	}
	res = invoke(t, f.srv.URL, "", "hierarchies", "config", cfgCluster, cfgHierarchy, "--resource", "config", "--version", "2", "--file", "/etc/postfix/main.cf")
	if res.code != 0 || res.stdout != "myhostname = b\n" {
		t.Fatalf("--file: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = invoke(t, f.srv.URL, "", "hierarchies", "config", cfgCluster, cfgHierarchy, "--resource", "config", "--version", "2", "--file", "/etc/postfix/x.db")
	if res.code == 0 || !strings.Contains(res.stderr, "no content") {
		t.Fatalf("--file of a file without content: exit %d, stderr %q", res.code, res.stderr)
	}
	res = invoke(t, f.srv.URL, "", "hierarchies", "config", cfgCluster, cfgHierarchy, "--version", "2")
	if res.code == 0 || !strings.Contains(res.stderr, "--resource") {
		t.Fatalf("--version without --resource: exit %d, stderr %q", res.code, res.stderr)
	}
}
