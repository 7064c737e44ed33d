package kit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// fakeConfig is a ConfigStore in memory (a fake inside this package's unit
// test; the real one is exercised by the server tests and the e2e).
type fakeConfig struct {
	mu          sync.Mutex
	versions    []backstop.ConfigVersion
	installed   []string
	unreachable bool
	// tamper changes the content of downloads (not their checksums).
	tamper bool
	// uploaded gets the version number of every new version, reported
	// every install report.
	uploaded chan int64
	reported chan struct{}
}

func newFakeConfig() *fakeConfig {
	return &fakeConfig{uploaded: make(chan int64, 16), reported: make(chan struct{}, 16)}
}

func (c *fakeConfig) Newest(context.Context) (*backstop.ConfigVersion, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unreachable {
		return nil, fmt.Errorf("%w: dial tcp: connection refused", ErrUnreachable)
	}
	if len(c.versions) == 0 {
		return nil, nil
	}
	v := c.versions[len(c.versions)-1]
	v.Files = append([]backstop.ConfigFile(nil), v.Files...)
	if c.tamper {
		v.Files[0].Content = []byte(strings.ToUpper(string(v.Files[0].Content)))
	}
	return &v, nil
}

func (c *fakeConfig) Upload(_ context.Context, sha string, files []backstop.ConfigFile) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unreachable {
		return 0, false, fmt.Errorf("%w: dial tcp: connection refused", ErrUnreachable)
	}
	if err := backstop.VerifyConfig(files, nil, sha); err != nil && !strings.Contains(err.Error(), "declared") {
		return 0, false, err
	}
	if n := len(c.versions); n > 0 && c.versions[n-1].SHA256 == sha {
		return c.versions[n-1].Version, false, nil
	}
	v := backstop.ConfigVersion{Version: int64(len(c.versions) + 1), SHA256: sha, Files: files}
	c.versions = append(c.versions, v)
	c.uploaded <- v.Version
	return v.Version, true, nil
}

func (c *fakeConfig) Installed(_ context.Context, version int64, sha, source, detail string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unreachable {
		return fmt.Errorf("%w: dial tcp: connection refused", ErrUnreachable)
	}
	c.installed = append(c.installed, fmt.Sprintf("%d %s %s", version, source, detail))
	c.reported <- struct{}{}
	return nil
}

func (c *fakeConfig) set(f func(c *fakeConfig)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

func (c *fakeConfig) installs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.installed...)
}

func newFilesKit(t *testing.T, store ConfigStore, params map[string]any) *files {
	t.Helper()
	inst, err := New(backstop.Resource{Name: "conf", Kind: backstop.KindFiles, Params: params}, Env{StateDir: t.TempDir(), Log: testLogger(t), Config: store})
	if err != nil {
		t.Fatal(err)
	}
	f := inst.(*files)
	f.retry = 20 * time.Millisecond
	t.Cleanup(func() { _ = f.Fence() })
	return f
}

// capturedKit starts a files resource, runs its first check and waits
// for the capture it uploads.
func capturedKit(t *testing.T, store *fakeConfig, params map[string]any) *files {
	t.Helper()
	f := newFilesKit(t, store, params)
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	waitUpload(t, store)
	return f
}

func waitUpload(t *testing.T, c *fakeConfig) int64 {
	t.Helper()
	select {
	case v := <-c.uploaded:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no upload")
		return 0
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// On the node in service: the first state is captured at start, a change
// seen by a check becomes the next version, an unchanged check uploads
// nothing, and Stop uploads a change made after the last check.
func TestFilesCapture(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "main.cf"), "a = 1\n", 0o644)
	store := newFakeConfig()
	f := newFilesKit(t, store, map[string]any{"paths": []any{dir}})
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(t.Context(), false); err != nil { // in service
		t.Fatal(err)
	}
	if v := waitUpload(t, store); v != 1 {
		t.Fatalf("first capture is version %d", v)
	}
	if err := f.Check(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub", "transport"), "example.com smtp:[198.18.1.9]\n", 0o644)
	if err := f.Check(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if v := waitUpload(t, store); v != 2 {
		t.Fatalf("change captured as version %d", v)
	}
	writeFile(t, filepath.Join(dir, "main.cf"), "a = 2\n", 0o640|0o004)
	if err := f.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v := waitUpload(t, store); v != 3 {
		t.Fatalf("last change uploaded at stop as version %d", v)
	}
	last := store.versions[2]
	if len(last.Files) != 2 || last.Files[0].Path != filepath.Join(dir, "main.cf") || last.Files[0].Mode != 0o644 || string(last.Files[0].Content) != "a = 2\n" {
		t.Fatalf("version 3: %+v", last.Files)
	}
}

// After an agent restart the hierarchy's resources are resumed, not
// started: the new instance's first check (never Start) resumes watching
// and passes — failing it would restart Postfix for a routine agent
// restart — and a change made while the agent was down is captured.
func TestFilesResumeAfterAgentRestart(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "main.cf"), "a = 1\n", 0o644)
	store := newFakeConfig()
	f := capturedKit(t, store, map[string]any{"paths": []any{dir}})
	_ = f.Fence() // the agent process dies (its uploader with it)
	writeFile(t, filepath.Join(dir, "main.cf"), "a = 2\n", 0o644)
	g := newFilesKit(t, store, map[string]any{"paths": []any{dir}})
	if err := g.Check(t.Context(), false); err != nil {
		t.Fatalf("first check of the restarted agent: %v", err)
	}
	if v := waitUpload(t, store); v != 2 {
		t.Fatalf("change made while the agent was down captured as version %d", v)
	}
	_ = g.Stop(t.Context())
}

// A file others cannot read is not captured in a resource not marked
// secret (nothing is uploaded; the check still passes, so the service is
// not failed over for it); in a secret resource it is.
func TestFilesSecretLooking(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "main.cf"), "a = 1\n", 0o644)
	writeFile(t, filepath.Join(dir, "sasl_passwd"), "relay user:pw\n", 0o600)
	store := newFakeConfig()
	f := newFilesKit(t, store, map[string]any{"paths": []any{dir}})
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(t.Context(), false); err != nil {
		t.Fatalf("check with a secret-looking file: %v", err)
	}
	if !strings.Contains(f.lastProblemNow(), "looks like a secret") {
		t.Fatalf("problem: %q", f.lastProblemNow())
	}
	if err := f.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(store.versions) != 0 {
		t.Fatalf("uploaded %d versions with a secret-looking file", len(store.versions))
	}
	secret := newFakeConfig()
	g := newFilesKit(t, secret, map[string]any{"paths": []any{dir}, "secret": true})
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	waitUpload(t, secret)
	_ = g.Stop(t.Context())
}

func (f *files) lastProblemNow() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastProblem
}

// Bringing up on another node installs the newest version before Start
// returns: contents, modes and modification times as captured, written through a temporary
// file and a rename (an open reader keeps the old file), files the
// version lacks removed, a file already equal left alone; the install is
// reported as from the control plane.
func TestFilesInstall(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(src, "main.cf"), "relayhost = [198.18.1.9]\n", 0o644)
	writeFile(t, filepath.Join(src, "maps", "virtual"), "a@x b@x\n", 0o664)
	edited := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "main.cf"), edited, edited); err != nil {
		t.Fatal(err)
	}
	store := newFakeConfig()
	f := capturedKit(t, store, map[string]any{"paths": []any{src}})
	_ = f.Stop(t.Context())
	// The backup's files, under the same path: rewrite the version's paths
	// to dst (as if dst were the same /etc/postfix on another node).
	store.set(func(c *fakeConfig) {
		v := &c.versions[0]
		for i := range v.Files {
			v.Files[i].Path = strings.Replace(v.Files[i].Path, src, dst, 1)
		}
		v.SHA256 = backstop.ConfigDigest(v.Files)
	})
	writeFile(t, filepath.Join(dst, "main.cf"), "relayhost =\n", 0o600)
	writeFile(t, filepath.Join(dst, "stale"), "old\n", 0o644)
	old, err := os.Open(filepath.Join(dst, "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	g := newFilesKit(t, store, map[string]any{"paths": []any{dst}})
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dst, "main.cf"))
	st, _ := os.Stat(filepath.Join(dst, "main.cf"))
	if string(b) != "relayhost = [198.18.1.9]\n" || st.Mode().Perm() != 0o644 || !st.ModTime().Equal(edited) {
		t.Fatalf("main.cf after install: %q %v %v (want mode 0644 and the captured time %v)", b, st.Mode(), st.ModTime(), edited)
	}
	st, _ = os.Stat(filepath.Join(dst, "maps", "virtual"))
	if st == nil || st.Mode().Perm() != 0o664 {
		t.Fatalf("maps/virtual after install: %v", st)
	}
	if _, err := os.Stat(filepath.Join(dst, "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file the version lacks is still there: %v", err)
	}
	ob, _ := os.ReadFile(old.Name())
	var buf [64]byte
	n, _ := old.Read(buf[:])
	if string(buf[:n]) != "relayhost =\n" || string(ob) == "relayhost =\n" {
		t.Fatalf("the old file was changed in place (reader sees %q), not replaced", buf[:n])
	}
	entries, _ := os.ReadDir(dst)
	for _, e := range entries {
		if isTemp(e.Name()) {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
	if len(store.installs()) != 0 {
		t.Fatal("the install was reported before the hierarchy was in service")
	}
	if err := g.Check(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-store.reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the install was never reported")
	}
	if got := store.installs()[0]; got != "1 control_plane " {
		t.Fatalf("install report %q", got)
	}
	if err := g.Check(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	_ = g.Stop(t.Context())
	if len(store.versions) != 1 {
		t.Fatalf("an install was captured again as version %d", len(store.versions))
	}
}

// A download whose content does not match its checksum, whose version
// checksum does not match its files, or that names a path that is not
// clean, is refused with the reason and nothing is written.
func TestFilesRefuseBadDownload(t *testing.T) {
	dst := t.TempDir()
	writeFile(t, filepath.Join(dst, "main.cf"), "mine\n", 0o644)
	content := []byte("theirs\n")
	good := backstop.ConfigFile{Path: filepath.Join(dst, "main.cf"), Mode: 0o644, Size: int64(len(content)), SHA256: backstop.FileSHA256(content), Content: content}
	for _, c := range []struct {
		name  string
		file  backstop.ConfigFile
		sha   string
		tamp  bool
		wants string
	}{
		{"checksum mismatch", good, "", true, "checksum mismatch: content hashes to"},
		{"version checksum mismatch", good, strings.Repeat("a", 64), false, "version checksum mismatch"},
		{"path not clean", func() backstop.ConfigFile {
			f := good
			f.Path = dst + "/../" + filepath.Base(dst) + "/main.cf"
			return f
		}(), "", false, "not an absolute, clean path"},
	} {
		store := newFakeConfig()
		sha := c.sha
		if sha == "" {
			sha = backstop.ConfigDigest([]backstop.ConfigFile{c.file})
		}
		store.versions = []backstop.ConfigVersion{{Version: 7, Files: []backstop.ConfigFile{c.file}, SHA256: sha}}
		store.tamper = c.tamp
		f := newFilesKit(t, store, map[string]any{"paths": []any{dst}})
		err := f.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), "refusing to install configuration version 7") || !strings.Contains(err.Error(), c.wants) {
			t.Fatalf("%s: start: %v", c.name, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "main.cf")); string(b) != "mine\n" {
			t.Fatalf("%s: main.cf is %q after a refused install", c.name, b)
		}
	}
}

// When the declared paths changed since the capture, an install writes
// only below today's paths (a file of the version outside them is left
// alone), and below a path the version holds nothing under (one added
// since) removes nothing.
func TestFilesInstallAfterPathsChanged(t *testing.T) {
	dst, added, dropped := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(added, "keep"), "the backup's own\n", 0o644)
	var fs []backstop.ConfigFile
	for p, c := range map[string]string{filepath.Join(dst, "main.cf"): "theirs\n", filepath.Join(dropped, "old"): "x\n"} {
		fs = append(fs, backstop.ConfigFile{Path: p, Mode: 0o644, Size: int64(len(c)), SHA256: backstop.FileSHA256([]byte(c)), Content: []byte(c)})
	}
	store := newFakeConfig()
	store.versions = []backstop.ConfigVersion{{Version: 3, Files: fs, SHA256: backstop.ConfigDigest(fs)}}
	f := newFilesKit(t, store, map[string]any{"paths": []any{dst, added}})
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "main.cf")); string(b) != "theirs\n" {
		t.Fatalf("main.cf %q", b)
	}
	if _, err := os.Stat(filepath.Join(dropped, "old")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file outside today's paths was written: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(added, "keep")); string(b) != "the backup's own\n" {
		t.Fatalf("a file below a path the version knows nothing of was removed: %q", b)
	}
	_ = f.Fence()
}

// With the control plane unreachable at bring-up: on_unreachable proceed
// starts with the files on the node and reports it (source local) once
// the control plane answers again, then captures them; fail refuses.
func TestFilesUnreachable(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "main.cf"), "a = 1\n", 0o644)
	store := newFakeConfig()
	store.unreachable = true
	strict := newFilesKit(t, store, map[string]any{"paths": []any{dir}, "on_unreachable": "fail"})
	if err := strict.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "on_unreachable is fail") {
		t.Fatalf("on_unreachable fail: %v", err)
	}
	// A bring-up with the node's files that is rolled back before the
	// control plane answers again uploads nothing at its take-down: a
	// stale node's files must not become the newest version.
	rolled := newFilesKit(t, store, map[string]any{"paths": []any{dir}})
	if err := rolled.Start(t.Context()); err != nil {
		t.Fatalf("on_unreachable proceed: %v", err)
	}
	store.set(func(c *fakeConfig) { c.unreachable = false })
	if err := rolled.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(store.versions) != 0 || len(store.installs()) != 0 {
		t.Fatalf("rolled-back local start uploaded %d versions, %d reports", len(store.versions), len(store.installs()))
	}
	store.set(func(c *fakeConfig) { c.unreachable = true })
	f := newFilesKit(t, store, map[string]any{"paths": []any{dir}})
	if err := f.Start(t.Context()); err != nil {
		t.Fatalf("on_unreachable proceed: %v", err)
	}
	if err := f.Check(t.Context(), false); err != nil { // in service
		t.Fatal(err)
	}
	store.set(func(c *fakeConfig) { c.unreachable = false })
	if v := waitUpload(t, store); v != 1 {
		t.Fatalf("version %d", v)
	}
	if got := store.installs(); len(got) != 1 || !strings.HasPrefix(got[0], "0 local the newest version could not be fetched") {
		t.Fatalf("install reports %q", got)
	}
	_ = f.Stop(t.Context())
}

// An install never writes through a symbolic link below a declared
// directory: the version is refused and the link's target is untouched.
func TestFilesInstallRefusesSymlinkedDir(t *testing.T) {
	dst, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dst, "maps")); err != nil {
		t.Fatal(err)
	}
	c := []byte("evil\n")
	fs := []backstop.ConfigFile{{Path: filepath.Join(dst, "maps", "passwd"), Mode: 0o644, Size: int64(len(c)), SHA256: backstop.FileSHA256(c), Content: c}}
	store := newFakeConfig()
	store.versions = []backstop.ConfigVersion{{Version: 2, Files: fs, SHA256: backstop.ConfigDigest(fs)}}
	f := newFilesKit(t, store, map[string]any{"paths": []any{dst}})
	err := f.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is a symbolic link on this node") {
		t.Fatalf("start: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "passwd")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("written through the link: %v", err)
	}
}
