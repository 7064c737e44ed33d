package kit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/backstop-ha/backstop"
)

// ConfigStore keeps the versions of one files resource at the control
// plane (the agent's implementation speaks the agent API).
type ConfigStore interface {
	// Newest returns the newest version with its contents; nil when
	// none was captured. An error wrapping ErrUnreachable means the
	// control plane could not be asked; any other error is its refusal.
	Newest(ctx context.Context) (*backstop.ConfigVersion, error)
	// Upload stores files (with contents) as the next version unless
	// they equal the newest; it returns the version they are.
	Upload(ctx context.Context, sha string, files []backstop.ConfigFile) (version int64, created bool, err error)
	// Installed reports what a bring-up installed (config.installed).
	Installed(ctx context.Context, version int64, sha, source, detail string) error
}

// ErrUnreachable wraps the errors of a ConfigStore that could not reach
// the control plane (network errors, 5xx).
var ErrUnreachable = errors.New("control plane unreachable")

func init() { kinds[backstop.KindFiles] = newFiles }

// files is a files resource: configuration that follows the hierarchy.
//
// In service, each check scans the declared paths (a stat per file; a
// file is read and hashed again only when its size, mtime, inode or mode
// changed) and, when the digest differs from what the control plane has,
// wakes the uploader, which reads the files and uploads them as a new
// version. Checks never fail on a capture problem (a file too big, a
// secret-looking file): failing them would restart or fail over the
// service for a configuration upload; the problem is logged instead.
//
// Start installs the newest version before the dependents start (they
// start after it: dependency order). The install report and the first
// capture wait for the first check, which only comes once the whole
// hierarchy is in service: a bring-up that rolls back reports and
// uploads nothing. Stop uploads a last change before the hierarchy
// leaves (an operator's edit just before a switchover). Fence stops the
// uploader at once.
type files struct {
	name  string
	p     backstop.FilesParams
	log   *slog.Logger
	store ConfigStore
	// retry is how long the uploader waits after a failed upload.
	retry time.Duration

	// mu guards the fields below.
	mu sync.Mutex
	// known is the digest of what the control plane has (last uploaded,
	// installed or downloaded); "" when unknown.
	known string
	// report is a config.installed report not sent yet.
	report *installReport
	// cache maps a path to what its stat and hash were.
	cache map[string]cachedFile
	// lastProblem is the last capture problem logged ("" when none).
	lastProblem string
	// up is the running uploader; nil when not in service here.
	up *uploader
	// checked is set by the first check after a start: the hierarchy
	// is in service (monitors check only then). Until then nothing is
	// reported or uploaded, so a bring-up that rolls back (perhaps with
	// the node's own, stale files) leaves no version and no report.
	checked bool
}

type installReport struct {
	version             int64
	sha, source, detail string
}

type cachedFile struct {
	size  int64
	mtime time.Time
	ino   uint64
	mode  uint32
	sha   string
}

type uploader struct {
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}
}

func newFiles(r backstop.Resource, env Env) (Instance, error) {
	p := backstop.ParseFilesParams(r.Params)
	if len(p.Paths) == 0 {
		return nil, fmt.Errorf("resource %q: no paths", r.Name)
	}
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &files{name: r.Name, p: p, log: log, store: env.Config, retry: time.Second, cache: map[string]cachedFile{}}, nil
}

// Start installs the newest version (unless the files on the node are
// it already) and starts watching. With the control plane unreachable it
// follows on_unreachable: proceed with the files on the node (reported
// as source "local" once the control plane answers again) or fail.
func (f *files) Start(ctx context.Context) error {
	f.mu.Lock()
	running := f.up != nil
	f.mu.Unlock()
	if running {
		// Brought in service again while running here (a newer epoch):
		// the files here are the newest, perhaps not uploaded yet; never
		// overwrite them with an older version.
		f.kick()
		return nil
	}
	start := time.Now()
	v, err := f.newest(ctx)
	switch {
	case errors.Is(err, ErrUnreachable) && f.p.OnUnreachable == backstop.ConfigProceed:
		local, lerr := f.scan()
		sha := ""
		if lerr == nil {
			sha = backstop.ConfigDigest(local)
		}
		f.log.WarnContext(ctx, "control plane unreachable at bring-up: starting with the files on this node (on_unreachable: proceed)",
			"resource", f.name, "err", err, "sha256", sha)
		f.mu.Lock()
		f.report = &installReport{source: "local", sha: sha, detail: fmt.Sprintf("the newest version could not be fetched (%v); started with the files on the node", err)}
		f.mu.Unlock()
	case errors.Is(err, ErrUnreachable):
		return fmt.Errorf("cannot fetch the newest configuration version and on_unreachable is fail: %w", err)
	case err != nil:
		return fmt.Errorf("fetch the newest configuration version: %w", err)
	case v == nil:
		f.log.InfoContext(ctx, "no configuration version captured yet: starting with the files on this node", "resource", f.name)
	default:
		if err := backstop.VerifyConfig(v.Files, nil, v.SHA256); err != nil {
			return fmt.Errorf("refusing to install configuration version %d: %w", v.Version, err)
		}
		// Files outside today's paths (the paths changed since the
		// capture) are left alone, never written.
		var want []backstop.ConfigFile
		for _, vf := range v.Files {
			if backstop.ConfigPathCovered(vf.Path, f.p.Paths) {
				want = append(want, vf)
			} else {
				f.log.WarnContext(ctx, "configuration version holds a file outside the declared paths: not installed", "resource", f.name,
					"version", v.Version, "path", vf.Path)
			}
		}
		wrote, err := f.install(want)
		if err != nil {
			return fmt.Errorf("install configuration version %d: %w", v.Version, err)
		}
		f.log.InfoContext(ctx, "configuration version installed", "resource", f.name, "version", v.Version, "sha256", v.SHA256,
			"files_written", wrote, "duration_ms", time.Since(start).Milliseconds())
		f.mu.Lock()
		f.known = v.SHA256
		f.report = &installReport{version: v.Version, sha: v.SHA256, source: "control_plane"}
		f.mu.Unlock()
	}
	f.startUploader()
	return nil
}

// newest asks the store, once more after a short pause if it was
// unreachable (a replica restarting).
func (f *files) newest(ctx context.Context) (*backstop.ConfigVersion, error) {
	if f.store == nil {
		return nil, fmt.Errorf("%w: this agent has no control plane connection", ErrUnreachable)
	}
	v, err := f.store.Newest(ctx)
	if !errors.Is(err, ErrUnreachable) {
		return v, err
	}
	select {
	case <-ctx.Done():
		return nil, err
	case <-time.After(500 * time.Millisecond):
	}
	return f.store.Newest(ctx)
}

// Stop uploads a change not uploaded yet (bounded by ctx) and stops
// watching.
func (f *files) Stop(ctx context.Context) error {
	f.mu.Lock()
	up := f.up
	f.up = nil
	f.mu.Unlock()
	if up == nil {
		return nil
	}
	up.cancel()
	<-up.done
	f.mu.Lock()
	checked := f.checked
	f.mu.Unlock()
	if !checked {
		// Never in service (a rolled-back bring-up): nothing ran with
		// these files; they are no news worth a version.
		return nil
	}
	if err := f.flush(ctx); err != nil {
		// The service is down already; a lost last change must not keep
		// the hierarchy from moving. Say so.
		f.log.WarnContext(ctx, "last configuration change not uploaded before take-down", "resource", f.name, "err", err)
	}
	f.mu.Lock()
	f.checked = false
	f.mu.Unlock()
	return nil
}

// Check captures: it never fails for a capture problem (see files).
// Monitors check only resources in service, so a check with no uploader
// running is an agent process that restarted while the hierarchy ran
// (its resources are resumed, not started again): watching resumes,
// without failing the check, which would restart the service.
func (f *files) Check(ctx context.Context, deep bool) error {
	f.mu.Lock()
	running := f.up != nil
	f.mu.Unlock()
	if !running {
		f.log.InfoContext(ctx, "watching the configuration again (the agent restarted while the hierarchy was in service)", "resource", f.name)
		f.startUploader()
	}
	f.mu.Lock()
	first := !f.checked
	f.checked = true
	pending := f.report != nil
	f.mu.Unlock()
	scanned, err := f.scan()
	if err != nil {
		f.problem(ctx, err)
		if first || pending {
			f.kick() // the install report at least
		}
		return nil
	}
	f.problem(ctx, nil)
	sha := backstop.ConfigDigest(scanned)
	f.mu.Lock()
	changed := sha != f.known
	f.mu.Unlock()
	if changed || first || pending {
		f.kick()
	}
	return nil
}

// Fence stops the uploader without waiting and uploads nothing.
func (f *files) Fence() error {
	f.mu.Lock()
	up := f.up
	f.up = nil
	f.checked = false
	f.mu.Unlock()
	if up != nil {
		up.cancel()
	}
	return nil
}

func (f *files) problem(ctx context.Context, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	f.mu.Lock()
	same := msg == f.lastProblem
	f.lastProblem = msg
	f.mu.Unlock()
	switch {
	case same:
	case err != nil:
		f.log.WarnContext(ctx, "configuration not captured", "resource", f.name, "err", err)
	default:
		f.log.InfoContext(ctx, "configuration capture works again", "resource", f.name)
	}
}

func (f *files) kick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.up == nil {
		return
	}
	select {
	case f.up.wake <- struct{}{}:
	default:
	}
}

func (f *files) startUploader() {
	ctx, cancel := context.WithCancel(context.Background())
	up := &uploader{cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
	f.mu.Lock()
	f.up = up
	f.mu.Unlock()
	go func() {
		defer close(up.done)
		retry := time.NewTimer(0)
		<-retry.C
		defer retry.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-up.wake:
			case <-retry.C:
			}
			if err := f.flush(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				f.log.WarnContext(ctx, "configuration upload failed; retrying", "resource", f.name, "err", err, "retry_in", f.retry)
				retry.Reset(f.retry)
			}
		}
	}()
}

// flush sends a pending install report and uploads the files when they
// differ from what the control plane has.
func (f *files) flush(ctx context.Context) error {
	if f.store == nil {
		return fmt.Errorf("%w: this agent has no control plane connection", ErrUnreachable)
	}
	f.mu.Lock()
	rep, checked := f.report, f.checked
	f.mu.Unlock()
	if !checked {
		return nil // not known to be in service yet (see checked)
	}
	if rep != nil {
		if err := f.store.Installed(ctx, rep.version, rep.sha, rep.source, rep.detail); err != nil {
			return fmt.Errorf("report the installed version: %w", err)
		}
		f.mu.Lock()
		if f.report == rep {
			f.report = nil
		}
		f.mu.Unlock()
	}
	started := time.Now()
	snap, err := f.read()
	if err != nil {
		f.problem(ctx, err)
		return nil // logged; the next change (or check) tries again
	}
	sha := backstop.ConfigDigest(snap)
	f.mu.Lock()
	same := sha == f.known
	f.mu.Unlock()
	if same {
		return nil
	}
	version, created, err := f.store.Upload(ctx, sha, snap)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.known = sha
	f.mu.Unlock()
	if created {
		f.log.InfoContext(ctx, "configuration captured", "resource", f.name, "version", version, "sha256", sha, "files", len(snap),
			"duration_ms", time.Since(started).Milliseconds())
	}
	return nil
}

// walk calls fn for every regular file below the declared paths (symbolic
// links and special files are neither followed nor captured; the
// kit's own temporary files are skipped), in path order.
func (f *files) walk(fn func(path string, info fs.FileInfo) error) error {
	for _, root := range f.p.Paths {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() || isTemp(d.Name()) {
				return nil
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			return fn(path, info)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// limits checks one more file against the resource's limits.
func (f *files) limits(path string, info fs.FileInfo, n int, total int64) error {
	switch {
	case n > backstop.MaxConfigFiles:
		return fmt.Errorf("more than %d files below %s", backstop.MaxConfigFiles, strings.Join(f.p.Paths, ", "))
	case total > f.p.MaxBytes:
		return fmt.Errorf("the files are more than max_bytes (%d bytes) at %s", f.p.MaxBytes, path)
	case !f.p.Secret && info.Mode().Perm()&0o004 == 0:
		return fmt.Errorf("%s has mode %04o: others cannot read it, so it looks like a secret; put it in a files resource with secret: true", path, fileMode(info))
	}
	return nil
}

// scan lists the files with their checksums, hashing only those whose
// stat changed since the last scan.
func (f *files) scan() ([]backstop.ConfigFile, error) {
	var out []backstop.ConfigFile
	var total int64
	next := map[string]cachedFile{}
	f.mu.Lock()
	cache := f.cache
	f.mu.Unlock()
	err := f.walk(func(path string, info fs.FileInfo) error {
		total += info.Size()
		if err := f.limits(path, info, len(out)+1, total); err != nil {
			return err
		}
		c := cachedFile{size: info.Size(), mtime: info.ModTime(), mode: fileMode(info)}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			c.ino = uint64(st.Ino)
		}
		if old, ok := cache[path]; ok && old.size == c.size && old.mtime.Equal(c.mtime) && old.ino == c.ino && old.mode == c.mode {
			c.sha = old.sha
		} else {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			c.sha = backstop.FileSHA256(b)
		}
		next[path] = c
		out = append(out, backstop.ConfigFile{Path: path, Mode: c.mode, Size: c.size, SHA256: c.sha})
		return nil
	})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.cache = next
	f.mu.Unlock()
	return out, nil
}

// read reads the files with their contents.
func (f *files) read() ([]backstop.ConfigFile, error) {
	var out []backstop.ConfigFile
	var total int64
	err := f.walk(func(path string, info fs.FileInfo) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		total += int64(len(b))
		if err := f.limits(path, info, len(out)+1, total); err != nil {
			return err
		}
		out = append(out, backstop.ConfigFile{Path: path, Mode: fileMode(info), Size: int64(len(b)), SHA256: backstop.FileSHA256(b), Content: b,
			MTime: info.ModTime()})
		return nil
	})
	return out, err
}

// install makes the declared paths hold exactly want: each file that
// differs is written to a temporary file in its directory, given its
// mode and modification time (and the owner of the file it replaces),
// synced and renamed over the old one, so that a reader sees the old
// file or the new one, never a part; files below the declared paths that
// want lacks are removed. It returns how many files it wrote or removed.
func (f *files) install(want []backstop.ConfigFile) (int, error) {
	// What is there now, whatever the limits (they bound captures, not
	// what an install replaces).
	cur := map[string]backstop.ConfigFile{}
	err := f.walk(func(path string, info fs.FileInfo) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		cur[path] = backstop.ConfigFile{Path: path, Mode: fileMode(info), SHA256: backstop.FileSHA256(b)}
		return nil
	})
	if err != nil {
		return 0, err
	}
	changed := 0
	dirs := map[string]bool{}
	for _, w := range want {
		h, ok := cur[w.Path]
		delete(cur, w.Path)
		if ok && h.SHA256 == w.SHA256 && h.Mode == w.Mode {
			continue
		}
		if err := noSymlinkBelow(w.Path, f.p.Paths); err != nil {
			return changed, err
		}
		if err := writeAtomic(w); err != nil {
			return changed, err
		}
		dirs[filepath.Dir(w.Path)] = true
		changed++
	}
	// Files the version does not have, below a declared path it holds a
	// file under: deleted on the node that captured it. Below a declared
	// path the version holds nothing under (added to paths since the
	// capture, or emptied), files are left alone: an install never
	// empties a directory it knows nothing of.
	var roots []string
	for _, p := range f.p.Paths {
		if slices.ContainsFunc(want, func(w backstop.ConfigFile) bool { return backstop.ConfigPathCovered(w.Path, []string{p}) }) {
			roots = append(roots, p)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(cur)) {
		if !backstop.ConfigPathCovered(p, roots) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return changed, err
		}
		dirs[filepath.Dir(p)] = true
		changed++
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		syncDir(d)
	}
	f.mu.Lock()
	f.cache = map[string]cachedFile{}
	f.mu.Unlock()
	return changed, nil
}

// noSymlinkBelow refuses to write p when a directory between its declared
// path and p is a symbolic link on this node: the write would land
// outside the declared paths (a capture never contains such a path, since
// the walk follows no link; a version that does is refused). The file
// itself may be a link: the rename replaces the link, not its target.
func noSymlinkBelow(p string, declared []string) error {
	for _, root := range declared {
		if !backstop.ConfigPathCovered(p, []string{root}) || p == root {
			continue
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil || rel == "." {
			return nil
		}
		dir := root
		for _, part := range strings.Split(rel, string(filepath.Separator)) {
			dir = filepath.Join(dir, part)
			info, err := os.Lstat(dir)
			if errors.Is(err, fs.ErrNotExist) {
				return nil // created as a directory by the install
			}
			if err != nil {
				return err
			}
			if info.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("refusing to write %s: %s is a symbolic link on this node, which would put the file outside the declared path %s", p, dir, root)
			}
		}
		return nil
	}
	return nil
}

const tempMarker = ".backstop-tmp-"

func isTemp(name string) bool { return strings.Contains(name, tempMarker) }

func writeAtomic(w backstop.ConfigFile) error {
	dir := filepath.Dir(w.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(w.Path)+tempMarker+"*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // after a successful rename: gone already
	_, err = tmp.Write(w.Content)
	if err == nil {
		err = tmp.Chmod(toFileMode(w.Mode))
	}
	if err == nil {
		if old, serr := os.Stat(w.Path); serr == nil {
			if st, ok := old.Sys().(*syscall.Stat_t); ok {
				err = tmp.Chown(int(st.Uid), int(st.Gid))
			}
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil && !w.MTime.IsZero() {
		// The captured time, as cp -p keeps it: Postfix waits until a
		// main.cf written in the last two seconds is two seconds old
		// (measured: postfix start 2.6 s instead of 0.5 s right after
		// an install that left the time of writing).
		err = os.Chtimes(name, w.MTime, w.MTime)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", w.Path, err)
	}
	if err := os.Rename(name, w.Path); err != nil {
		return fmt.Errorf("write %s: %w", w.Path, err)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// fileMode is the permission bits of info as in chmod(2) (0o7777).
func fileMode(info fs.FileInfo) uint32 {
	m := uint32(info.Mode().Perm())
	if info.Mode()&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if info.Mode()&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if info.Mode()&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

func toFileMode(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}
