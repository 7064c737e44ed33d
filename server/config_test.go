package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/server/notify"
)

type upFile struct {
	Path    string `json:"path"`
	Mode    int    `json:"mode"`
	Size    int    `json:"size"`
	SHA256  string `json:"sha256"`
	Content []byte `json:"content"`
	MTime   string `json:"mtime,omitempty"`
}

func upload(files map[string]string, mode int) map[string]any {
	var fs []backstop.ConfigFile
	var out []upFile
	for p, c := range files {
		f := backstop.ConfigFile{Path: p, Mode: uint32(mode), Size: int64(len(c)), SHA256: backstop.FileSHA256([]byte(c)), Content: []byte(c)}
		fs = append(fs, f)
		out = append(out, upFile{Path: p, Mode: mode, Size: len(c), SHA256: f.SHA256, Content: f.Content, MTime: "2026-12-01T10:00:00Z"})
	}
	return map[string]any{"sha256": backstop.ConfigDigest(fs), "files": out}
}

// The configuration endpoints end to end over HTTP with a real store: a
// files resource is validated at create (422 naming the field), only the
// node holding the hierarchy uploads and downloads (409 for another), a
// tampered upload is 422, versions list newest first with unified diffs
// (text), checksums only (binary, secret), and a secret version is never
// shown in plaintext but reaches the holder's agent.
func TestConfigVersionsAPI(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{})
	cid, _ := clusterWithNodes(e, 0)
	var creds, nodes []string
	for _, name := range []string{"mx1", "mx2"} {
		id, token := e.addNode(cid, name)
		nodes = append(nodes, id)
		creds = append(creds, e.enroll(token).Credential)
	}
	spec := mailSpec("mail", nodes)
	res := spec["resources"].([]map[string]any)
	bad := append(res, map[string]any{"name": "conf", "kind": "files", "params": map[string]any{"paths": []string{"etc/postfix", "/etc/../shadow"}, "max_bytes": 1 << 30}})
	spec["resources"] = bad
	resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", spec)
	if resp.StatusCode != 422 || !strings.Contains(string(b), "/resources/3/params/paths") || !strings.Contains(string(b), "/resources/3/params/max_bytes") {
		t.Fatalf("bad files resource: %d %s; want 422 naming paths and max_bytes", resp.StatusCode, b)
	}
	res = append(res,
		map[string]any{"name": "conf", "kind": "files", "params": map[string]any{"paths": []string{"/etc/postfix"}}},
		map[string]any{"name": "keys", "kind": "files", "params": map[string]any{"paths": []string{"/etc/postfix-secret"}, "secret": true}})
	res[2]["depends_on"] = []string{"spool", "conf", "keys"}
	spec["resources"] = res
	resp, b = e.do("POST", "/v1/clusters/"+cid+"/hierarchies", spec)
	if resp.StatusCode != 201 {
		t.Fatalf("hierarchy: %d %s", resp.StatusCode, b)
	}
	var h struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &h)
	if _, err := e.st.Pool().Exec(t.Context(), `UPDATE hierarchies SET placement_node_id = $2, placement_state = 'in_service', epoch = 1 WHERE id = $1`, h.ID, nodes[0]); err != nil {
		t.Fatal(err)
	}
	base := "/agent/v1/hierarchies/" + h.ID + "/config/"

	if resp, b := e.agentDo(creds[0], "GET", base+"conf", nil); resp.StatusCode != 204 {
		t.Fatalf("download before any capture: %d %s; want 204", resp.StatusCode, b)
	}
	v1 := upload(map[string]string{"/etc/postfix/main.cf": "myhostname = a\n", "/etc/postfix/x.db": "\x00\x01bin"}, 0o644)
	if resp, b := e.agentDo(creds[1], "POST", base+"conf", v1); resp.StatusCode != 409 || !strings.Contains(string(b), "does not hold") {
		t.Fatalf("upload by the node not holding the hierarchy: %d %s; want 409", resp.StatusCode, b)
	}
	if resp, b := e.agentDo(creds[0], "POST", base+"conf", v1); resp.StatusCode != 201 || !strings.Contains(string(b), `"version":1`) {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.agentDo(creds[0], "POST", base+"conf", v1); resp.StatusCode != 200 || !strings.Contains(string(b), `"created":false`) {
		t.Fatalf("same upload again: %d %s; want 200 created false", resp.StatusCode, b)
	}
	tampered := upload(map[string]string{"/etc/postfix/main.cf": "myhostname = b\n"}, 0o644)
	tampered["files"].([]upFile)[0].Content = []byte("myhostname = z\n")
	if resp, b := e.agentDo(creds[0], "POST", base+"conf", tampered); resp.StatusCode != 422 || !strings.Contains(string(b), "checksum mismatch") || !strings.Contains(string(b), "/files/0") {
		t.Fatalf("tampered upload: %d %s; want 422 naming /files/0", resp.StatusCode, b)
	}
	v2 := upload(map[string]string{"/etc/postfix/main.cf": "myhostname = b\n", "/etc/postfix/x.db": "\x00\x02bin"}, 0o644)
	if resp, b := e.agentDo(creds[0], "POST", base+"conf", v2); resp.StatusCode != 201 {
		t.Fatalf("upload v2: %d %s", resp.StatusCode, b)
	}
	const secret = "relay:hunter2-secret\n"
	if resp, b := e.agentDo(creds[0], "POST", base+"keys", upload(map[string]string{"/etc/postfix-secret/sasl": secret}, 0o600)); resp.StatusCode != 201 {
		t.Fatalf("secret upload: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.agentDo(creds[0], "POST", base+"keys", upload(map[string]string{"/etc/postfix-secret/sasl": secret + "x\n"}, 0o600)); resp.StatusCode != 201 {
		t.Fatalf("secret upload 2: %d %s", resp.StatusCode, b)
	}

	resp, b = e.do("GET", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/config-versions", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, b)
	}
	if strings.Contains(string(b), "hunter2") {
		t.Fatalf("a secret in the listing: %s", b)
	}
	var list struct {
		Items []struct {
			Resource string `json:"resource"`
			Version  int64  `json:"version"`
			Secret   bool   `json:"secret"`
			Files    []struct {
				Path           string  `json:"path"`
				Change         string  `json:"change"`
				Binary         bool    `json:"binary"`
				Diff           *string `json:"diff"`
				PreviousSHA256 *string `json:"previous_sha256"`
			} `json:"files"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil || len(list.Items) != 4 {
		t.Fatalf("list: %v %s", err, b)
	}
	got := list.Items[0] // conf v2: by resource, newest first
	if got.Resource != "conf" || got.Version != 2 || len(got.Files) != 2 {
		t.Fatalf("first item: %+v", got)
	}
	mainCF, bin := got.Files[0], got.Files[1]
	if mainCF.Change != "modified" || mainCF.Diff == nil || !strings.Contains(*mainCF.Diff, "-myhostname = a") || !strings.Contains(*mainCF.Diff, "+myhostname = b") {
		t.Fatalf("main.cf change: %+v", mainCF)
	}
	if bin.Change != "modified" || !bin.Binary || bin.Diff != nil || bin.PreviousSHA256 == nil {
		t.Fatalf("binary change: %+v (want checksums only)", bin)
	}
	sec := list.Items[2]
	if sec.Resource != "keys" || sec.Version != 2 || !sec.Secret || sec.Files[0].Change != "modified" || sec.Files[0].Diff != nil || !sec.Files[0].Binary {
		t.Fatalf("secret item: %+v (want the change and checksums only)", sec)
	}
	resp, b = e.do("GET", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/config-versions?resource=conf&limit=1", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "next_cursor") {
		t.Fatalf("first page: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/config-versions?cursor=zz", nil)
	if resp.StatusCode != 422 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("bad cursor: %d %s", resp.StatusCode, b)
	}

	// One version: its changes and, unless secret, its contents.
	hv := "/v1/clusters/" + cid + "/hierarchies/" + h.ID + "/config-versions/"
	resp, b = e.do("GET", hv+"conf/2", nil)
	var one struct {
		Version int64 `json:"version"`
		Files   []struct {
			Path    string  `json:"path"`
			Content []byte  `json:"content"`
			Diff    *string `json:"diff"`
		} `json:"files"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &one) != nil || one.Version != 2 || string(one.Files[0].Content) != "myhostname = b\n" || one.Files[0].Diff == nil {
		t.Fatalf("GET conf/2: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", hv+"keys/2", nil)
	if resp.StatusCode != 200 || strings.Contains(string(b), "hunter2") || strings.Contains(string(b), `"content"`) {
		t.Fatalf("GET of a secret version: %d %s; want no content", resp.StatusCode, b)
	}
	resp, b = e.do("GET", hv+"conf/99", nil)
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(b), "no configuration version 99") {
		t.Fatalf("GET of a version never captured: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("GET", hv+"conf/0", nil); resp.StatusCode != 400 {
		t.Fatalf("GET version 0: %d %s", resp.StatusCode, b)
	}

	// The holder's agent gets the secret back, unsealed; the other node
	// does not.
	resp, b = e.agentDo(creds[0], "GET", base+"keys", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"version":2`) {
		t.Fatalf("download secret: %d %s", resp.StatusCode, b)
	}
	var dl struct {
		Files []upFile `json:"files"`
	}
	if err := json.Unmarshal(b, &dl); err != nil || string(dl.Files[0].Content) != secret+"x\n" || dl.Files[0].MTime != "2026-12-01T10:00:00Z" {
		t.Fatalf("downloaded secret: %v %+v", err, dl)
	}
	if resp, b := e.agentDo(creds[1], "GET", base+"keys", nil); resp.StatusCode != 409 {
		t.Fatalf("download by another node: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.agentDo(creds[0], "POST", base+"conf/installed", map[string]any{"version": 2, "sha256": "x", "source": "control_plane"}); resp.StatusCode != 204 {
		t.Fatalf("installed: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.agentDo(creds[0], "GET", base+"vip", nil); resp.StatusCode != 404 || !strings.Contains(string(b), "not files") {
		t.Fatalf("download of an ip resource: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", fmt.Sprintf("/v1/clusters/%s/events?type=config.installed", cid), nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"version":2`) {
		t.Fatalf("config.installed: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", fmt.Sprintf("/v1/clusters/%s/events?type=config.captured", cid), nil)
	if resp.StatusCode != 200 || strings.Count(string(b), `"type":"config.captured"`) != 4 {
		t.Fatalf("config.captured: %d %s", resp.StatusCode, b)
	}
}
