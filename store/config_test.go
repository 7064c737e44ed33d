package store_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/server/seal"
)

// configEnv is a hierarchy with a files resource ("conf", keeping 3
// versions) and a secret one ("keys"), in service on the first node.
func configEnv(t *testing.T) (*judgeEnv, backstop.Hierarchy) {
	t.Helper()
	e := newJudgeEnv(t, 2)
	h := vipHierarchy(e.c, "mail", e.nodes[0], e.nodes[1])
	h.Resources = append(h.Resources,
		backstop.Resource{Name: "conf", Kind: backstop.KindFiles, Params: map[string]any{"paths": []any{"/etc/postfix"}, "keep_versions": 3.0}},
		backstop.Resource{Name: "keys", Kind: backstop.KindFiles, Params: map[string]any{"paths": []any{"/etc/postfix/sasl_passwd"}, "secret": true}},
	)
	h, err := e.st.CreateHierarchy(actorCtx(t), h)
	if err != nil {
		t.Fatal(err)
	}
	e.exec(`UPDATE hierarchies SET placement_node_id = $2, placement_state = 'in_service', epoch = 1 WHERE id = $1`, h.ID, e.nodes[0].ID)
	return e, h
}

func agentOf(e *judgeEnv, i int) backstop.AgentIdentity {
	return backstop.AgentIdentity{NodeID: e.nodes[i].ID, ClusterID: e.c.ID, NodeName: e.nodes[i].Name}
}

func confFiles(mainCF string) ([]backstop.ConfigFile, string) {
	fs := []backstop.ConfigFile{
		{Path: "/etc/postfix/main.cf", Mode: 0o644, Content: []byte(mainCF)},
		{Path: "/etc/postfix/master.cf", Mode: 0o644, Content: []byte("smtp inet n - n - - smtpd\n")},
	}
	for i := range fs {
		fs[i].Size, fs[i].SHA256 = int64(len(fs[i].Content)), backstop.FileSHA256(fs[i].Content)
	}
	return fs, backstop.ConfigDigest(fs)
}

// Versions are numbered per resource, an unchanged upload stores nothing,
// the oldest past keep_versions are pruned in the same transaction, each
// new version writes config.captured, and lists give every version with
// the one before it, page by page.
func TestConfigVersions(t *testing.T) {
	e, h := configEnv(t)
	a := agentOf(e, 0)
	for i, cf := range []string{"a = 1\n", "a = 2\n", "a = 2\n", "a = 3\n", "a = 4\n"} {
		fs, sha := confFiles(cf)
		v, created, err := e.st.UploadConfig(t.Context(), a, h.ID, "conf", sha, fs, nil)
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		if created == (i == 2) {
			t.Fatalf("upload %d: created %v (an unchanged upload must store nothing, a changed one a version)", i, created)
		}
		if want := []int64{1, 2, 2, 3, 4}[i]; v.Version != want || v.SHA256 != sha {
			t.Fatalf("upload %d: version %d sha %s, want %d %s", i, v.Version, v.SHA256, want, sha)
		}
	}
	var kept []int64
	rows, _ := e.st.Pool().Query(t.Context(), `SELECT version FROM config_versions WHERE resource = 'conf' ORDER BY version`)
	for rows.Next() {
		var v int64
		_ = rows.Scan(&v)
		kept = append(kept, v)
	}
	if rows.Err() != nil || len(kept) != 3 || kept[0] != 2 || kept[2] != 4 {
		t.Fatalf("kept versions %v (%v), want [2 3 4] (keep_versions 3)", kept, rows.Err())
	}
	evs, err := e.st.ListEvents(t.Context(), backstop.EventFilter{ClusterID: e.c.ID, Type: "config.captured", Limit: 10})
	if err != nil || len(evs) != 4 {
		t.Fatalf("config.captured events: %d, %v; want 4", len(evs), err)
	}
	last := evs[len(evs)-1]
	if last.Subject["hierarchy_id"] != h.ID || last.Subject["node_id"] != a.NodeID || last.Details["resource"] != "conf" ||
		last.Details["version"] != float64(4) || last.Details["sha256"] == "" {
		t.Fatalf("last config.captured: %+v", last)
	}

	page1, next, err := e.st.ListConfigVersions(t.Context(), e.c.ID, h.ID, "", backstop.Page{Limit: 2})
	if err != nil || len(page1) != 2 || next == "" || page1[0].Version != 4 || page1[1].Version != 3 {
		t.Fatalf("page 1: %d items, next %q, %v", len(page1), next, err)
	}
	if page1[0].Previous == nil || page1[0].Previous.Version != 3 || len(page1[0].Previous.Stored) == 0 {
		t.Fatalf("version 4 comes without version 3: %+v", page1[0].Previous)
	}
	page2, next, err := e.st.ListConfigVersions(t.Context(), e.c.ID, h.ID, "", backstop.Page{Limit: 2, Cursor: next})
	if err != nil || len(page2) != 1 || next != "" || page2[0].Version != 2 || page2[0].Previous != nil {
		t.Fatalf("page 2: %+v, next %q, %v (the oldest kept has no previous)", page2, next, err)
	}
	v := page1[0]
	if err := backstop.OpenConfigContent(&v, v.Stored); err != nil || string(v.Files[0].Content) != "a = 4\n" {
		t.Fatalf("stored content of version 4: %v %q", err, v.Files[0].Content)
	}
	if v, err := e.st.FindConfigVersion(t.Context(), e.c.ID, h.ID, "conf", 3); err != nil || v.Version != 3 || v.Previous == nil || v.Previous.Version != 2 {
		t.Fatalf("find version 3: %+v, %v", v, err)
	}
	if _, err := e.st.FindConfigVersion(t.Context(), e.c.ID, h.ID, "conf", 1); !errors.Is(err, backstop.ErrNotFound) {
		t.Fatalf("find a pruned version: %v", err)
	}
	newest, found, err := e.st.NewestConfig(t.Context(), a, h.ID, "conf")
	if err != nil || !found || newest.Version != 4 {
		t.Fatalf("newest: %+v %v %v", newest, found, err)
	}
	if _, found, err := e.st.NewestConfig(t.Context(), a, h.ID, "keys"); err != nil || found {
		t.Fatalf("newest of a resource never captured: found %v, %v", found, err)
	}
	if _, _, err := e.st.ListConfigVersions(t.Context(), e.c.ID, h.ID, "", backstop.Page{Cursor: "!!"}); !errors.Is(err, backstop.ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
	if _, _, err := e.st.ListConfigVersions(t.Context(), e.c.ID, e.nodes[0].ID, "", backstop.Page{}); !errors.Is(err, backstop.ErrNotFound) {
		t.Fatalf("unknown hierarchy: %v", err)
	}
}

// Only the node that holds the hierarchy may upload, download or report:
// the invariant "never two copies" extends to configuration, so a node
// the hierarchy moved away from cannot overwrite the newest version.
func TestConfigOnlyHolder(t *testing.T) {
	e, h := configEnv(t)
	fs, sha := confFiles("a = 1\n")
	other := agentOf(e, 1)
	_, _, err := e.st.UploadConfig(t.Context(), other, h.ID, "conf", sha, fs, nil)
	if !errors.Is(err, backstop.ErrConflict) || !strings.Contains(err.Error(), "does not hold") {
		t.Fatalf("upload by a node that does not hold the hierarchy: %v, want ErrConflict", err)
	}
	if _, _, err := e.st.NewestConfig(t.Context(), other, h.ID, "conf"); !errors.Is(err, backstop.ErrConflict) {
		t.Fatalf("download by another node: %v", err)
	}
	if err := e.st.ConfigInstalled(t.Context(), other, h.ID, "conf", 0, "", "local", "x"); !errors.Is(err, backstop.ErrConflict) {
		t.Fatalf("report by another node: %v", err)
	}
	// Stopping on node 1 (a take-down): its last change may still be
	// uploaded, but nothing is handed out for a bring-up.
	e.exec(`UPDATE hierarchies SET placement_state = 'stopping' WHERE id = $1`, h.ID)
	if _, _, err := e.st.UploadConfig(t.Context(), agentOf(e, 0), h.ID, "conf", sha, fs, nil); err != nil {
		t.Fatalf("last upload of the stopping node: %v", err)
	}
	if _, _, err := e.st.NewestConfig(t.Context(), agentOf(e, 0), h.ID, "conf"); !errors.Is(err, backstop.ErrConflict) {
		t.Fatalf("download by the stopping node: %v", err)
	}
	// Starting on node 2 (a bring-up): node 2 may read, node 1 no longer
	// writes.
	e.exec(`UPDATE hierarchies SET placement_node_id = $2, placement_state = 'starting', epoch = 2 WHERE id = $1`, h.ID, e.nodes[1].ID)
	if _, _, err := e.st.UploadConfig(t.Context(), agentOf(e, 0), h.ID, "conf", sha, fs, nil); !errors.Is(err, backstop.ErrConflict) {
		t.Fatalf("upload by the node the hierarchy left: %v", err)
	}
	if _, _, err := e.st.NewestConfig(t.Context(), other, h.ID, "conf"); err != nil {
		t.Fatalf("download by the starting node: %v", err)
	}
	if err := e.st.ConfigInstalled(t.Context(), other, h.ID, "conf", 0, "", "local", "control plane unreachable"); err != nil {
		t.Fatal(err)
	}
	evs, err := e.st.ListEvents(t.Context(), backstop.EventFilter{ClusterID: e.c.ID, Type: "config.installed", Limit: 10})
	if err != nil || len(evs) != 1 || evs[0].Details["source"] != "local" || evs[0].Subject["node_id"] != other.NodeID {
		t.Fatalf("config.installed: %+v, %v", evs, err)
	}
	// Unknown resource, or one of another kind.
	for _, r := range []string{"nope", "vip"} {
		if _, _, err := e.st.UploadConfig(t.Context(), other, h.ID, r, sha, fs, nil); !errors.Is(err, backstop.ErrNotFound) {
			t.Fatalf("upload to %s: %v, want ErrNotFound", r, err)
		}
	}
}

// An upload whose files do not match their checksums, lie outside the
// declared paths, exceed max_bytes or look like secrets (mode 0600 in a
// resource not marked secret) is refused, naming the file.
func TestConfigUploadRefused(t *testing.T) {
	e, h := configEnv(t)
	a := agentOf(e, 0)
	fs, sha := confFiles("a = 1\n")
	bad := func(name string, mutate func([]backstop.ConfigFile) ([]backstop.ConfigFile, string), want string) {
		t.Helper()
		f := make([]backstop.ConfigFile, len(fs))
		copy(f, fs)
		f, s := mutate(f)
		_, _, err := e.st.UploadConfig(t.Context(), a, h.ID, "conf", s, f, nil)
		var ve *backstop.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want a validation error with %q", name, err, want)
		}
	}
	bad("content tampered", func(f []backstop.ConfigFile) ([]backstop.ConfigFile, string) {
		f[0].Content = []byte("a = 9\n")
		return f, sha
	}, "checksum mismatch")
	bad("version checksum wrong", func(f []backstop.ConfigFile) ([]backstop.ConfigFile, string) {
		return f, strings.Repeat("0", 64)
	}, "version checksum mismatch")
	bad("outside the declared paths", func(f []backstop.ConfigFile) ([]backstop.ConfigFile, string) {
		f[0].Path = "/etc/shadow"
		return f, backstop.ConfigDigest(f)
	}, "not below any declared path")
	bad("looks like a secret", func(f []backstop.ConfigFile) ([]backstop.ConfigFile, string) {
		f[1].Mode = 0o600
		return f, backstop.ConfigDigest(f)
	}, "looks like a secret")
	bad("too big", func(f []backstop.ConfigFile) ([]backstop.ConfigFile, string) {
		big := bytes.Repeat([]byte("x"), backstop.DefaultConfigMaxBytes)
		f[0].Content, f[0].Size, f[0].SHA256 = big, int64(len(big)), backstop.FileSHA256(big)
		return f, backstop.ConfigDigest(f)
	}, "max_bytes")
}

// A secret resource's versions are sealed in the database: the plaintext
// is nowhere in the row, and the sealed content opens only for its own
// version.
func TestConfigSecretSealed(t *testing.T) {
	e, h := configEnv(t)
	key, err := seal.DeriveKey("test\x00", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New(key, "config")
	if err != nil {
		t.Fatal(err)
	}
	sealFn := func(id string, plain []byte) ([]byte, error) { return s.Seal(id, plain), nil }
	secret := []byte("[smtp.example]:587 user:hunter2-very-secret\n")
	fs := []backstop.ConfigFile{{Path: "/etc/postfix/sasl_passwd", Mode: 0o600, Size: int64(len(secret)), SHA256: backstop.FileSHA256(secret), Content: secret}}
	sha := backstop.ConfigDigest(fs)
	if _, _, err := e.st.UploadConfig(t.Context(), agentOf(e, 0), h.ID, "keys", sha, fs, nil); err == nil {
		t.Fatal("a secret version was stored without a sealer")
	}
	v, created, err := e.st.UploadConfig(t.Context(), agentOf(e, 0), h.ID, "keys", sha, fs, sealFn)
	if err != nil || !created || !v.Secret {
		t.Fatalf("secret upload: %+v %v %v", v, created, err)
	}
	var leaked bool
	if err := e.st.Pool().QueryRow(t.Context(), `SELECT position('hunter2'::bytea in content) > 0 OR files::text LIKE '%hunter2%' FROM config_versions WHERE resource = 'keys'`).Scan(&leaked); err != nil || leaked {
		t.Fatalf("plaintext in the row: %v %v", leaked, err)
	}
	var evLeak bool
	if err := e.st.Pool().QueryRow(t.Context(), `SELECT bool_or(details::text LIKE '%hunter2%') FROM events`).Scan(&evLeak); err != nil || evLeak {
		t.Fatalf("plaintext in events: %v %v", evLeak, err)
	}
	got, _, err := e.st.NewestConfig(t.Context(), agentOf(e, 0), h.ID, "keys")
	if err != nil || !got.Secret {
		t.Fatal(got, err)
	}
	if _, err := s.Open(backstop.ConfigSealID(h.ID, "keys", 2), got.Stored); !errors.Is(err, seal.ErrCannotOpen) {
		t.Fatalf("sealed content opened for another version: %v", err)
	}
	plain, err := s.Open(backstop.ConfigSealID(h.ID, "keys", 1), got.Stored)
	if err != nil {
		t.Fatal(err)
	}
	if err := backstop.OpenConfigContent(&got, plain); err != nil || !bytes.Equal(got.Files[0].Content, secret) {
		t.Fatalf("open: %v %q", err, got.Files[0].Content)
	}
}
