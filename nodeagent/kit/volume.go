package kit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backstop-ha/backstop"
)

func init() { kinds[backstop.KindVolume] = newVolume }

const (
	// busyRetryFor is how long Stop retries an unmount that fails with
	// EBUSY before it detaches lazily.
	busyRetryFor = time.Second
	busyRetryGap = 100 * time.Millisecond
	// maxStacked bounds the unmount loops when mounts are stacked on the
	// target.
	maxStacked = 8
)

// volumeKit is a mounted file system: kind "volume".
//
// A directory source with fstype empty or "bind" is bind-mounted; any
// other source is mounted with mount(2) using fstype and options, except
// a regular file (a disk image), which mount(8) mounts through a loop
// device ("-o loop"). Mounts are made in the mount namespace of the agent
// process.
type volumeKit struct {
	desc    string // "volume /dev/vdb on /srv/mail"
	source  string
	target  string
	fstype  string
	options string
	log     *slog.Logger

	resolved string // the target with symbolic links resolved, once Start has
}

func newVolume(r backstop.Resource, env Env) (Instance, error) {
	p := params{r}
	k := &volumeKit{log: logger(env)}
	var err error
	if k.source, err = p.str("source", true); err != nil {
		return nil, err
	}
	if k.target, err = p.str("target", true); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(k.source) {
		return nil, p.errorf("source", "must be an absolute path")
	}
	if !filepath.IsAbs(k.target) || filepath.Clean(k.target) == "/" {
		return nil, p.errorf("target", "must be an absolute path other than /")
	}
	if k.fstype, err = p.str("fstype", false); err != nil {
		return nil, err
	}
	if k.options, err = p.str("options", false); err != nil {
		return nil, err
	}
	k.source, k.target = filepath.Clean(k.source), filepath.Clean(k.target)
	k.desc = fmt.Sprintf("volume %s on %s", k.source, k.target)
	return k, nil
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dev    uint64 // st_dev of the file system (major:minor)
	point  string
	fstype string
	source string
}

// mountsAt returns the mounts on point, bottom first (the last one is the
// visible one), from /proc/self/mountinfo (proc(5)).
func mountsAt(point string) ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 10 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		if unescapeMount(f[4]) != point {
			continue
		}
		e := mountEntry{point: point, fstype: f[sep+1], source: unescapeMount(f[sep+2])}
		if maj, min, ok := strings.Cut(f[2], ":"); ok {
			a, _ := strconv.ParseUint(maj, 10, 32)
			b, _ := strconv.ParseUint(min, 10, 32)
			e.dev = unix.Mkdev(uint32(a), uint32(b))
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// realTarget resolves symbolic links in the target, as the kernel records
// the resolved path in mountinfo. It resolves the parent directory and
// looks at the target itself only with lstat, and only when nothing is
// mounted there yet (Start caches the result): a stat through a mounted
// but hung file system would block.
func (k *volumeKit) realTarget() string {
	if k.resolved != "" {
		return k.resolved
	}
	return k.resolveTarget(false)
}

func (k *volumeKit) resolveTarget(followLast bool) string {
	t := k.target
	if dir, err := filepath.EvalSymlinks(filepath.Dir(k.target)); err == nil {
		t = filepath.Join(dir, filepath.Base(k.target))
	}
	if followLast {
		if fi, err := os.Lstat(t); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if r, err := filepath.EvalSymlinks(t); err == nil {
				t = r
			}
		}
	}
	return t
}

// bindLike tells whether the volume is a bind mount of a directory.
func (k *volumeKit) bindLike() (bool, error) {
	fi, err := os.Stat(k.source)
	if err != nil {
		return false, fmt.Errorf("%s: source: %w", k.desc, err)
	}
	if fi.IsDir() {
		if k.fstype != "" && k.fstype != "bind" && k.fstype != "rbind" {
			return false, fmt.Errorf("%s: source is a directory, but fstype is %q (use no fstype, or bind)", k.desc, k.fstype)
		}
		return true, nil
	}
	if k.fstype == "bind" || k.fstype == "rbind" {
		// Binding a single file is legal for mount(2), but not what a
		// volume is.
		return false, fmt.Errorf("%s: fstype bind needs a directory source", k.desc)
	}
	return false, nil
}

// mounted tells whether the visible mount on the target is source: for a
// bind mount, the target's root is the source directory (same device and
// inode); for a block device, the file system is on that device; for a
// disk image, the loop device's backing file is the image.
func (k *volumeKit) mounted() (bool, error) {
	target := k.realTarget()
	ms, err := mountsAt(target)
	if err != nil {
		return false, fmt.Errorf("%s: %w", k.desc, err)
	}
	if len(ms) == 0 {
		return false, nil
	}
	top := ms[len(ms)-1]
	var src unix.Stat_t
	if err := unix.Stat(k.source, &src); err != nil {
		return false, fmt.Errorf("%s: source: %w", k.desc, err)
	}
	switch src.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		var tgt unix.Stat_t
		if err := unix.Stat(target, &tgt); err != nil {
			return false, fmt.Errorf("%s: target: %w", k.desc, err)
		}
		if tgt.Dev == src.Dev && tgt.Ino == src.Ino {
			return true, nil
		}
	case unix.S_IFBLK:
		if top.dev == src.Rdev {
			return true, nil
		}
	case unix.S_IFREG:
		if strings.HasPrefix(top.source, "/dev/loop") {
			bf, err := os.ReadFile("/sys/block/" + filepath.Base(top.source) + "/loop/backing_file")
			real, rerr := filepath.EvalSymlinks(k.source)
			if err == nil && rerr == nil && strings.TrimSpace(string(bf)) == real {
				return true, nil
			}
		}
	default:
		if top.source == k.source {
			return true, nil
		}
	}
	return false, fmt.Errorf("%s: target is a mount point of %s (%s), not of the source: %w", k.desc, top.source, top.fstype, errOtherMount)
}

// errOtherMount marks a target on which something else than the source is
// mounted.
var errOtherMount = errors.New("another file system is mounted there")

// Check reports whether the target is a mount point of the source
// (ErrNotRunning when nothing is mounted there). The deep check also
// writes, fsyncs, reads back and deletes a probe file under the target;
// it gives up when ctx ends (a hung NFS server may keep the probe
// goroutine blocked in the kernel, which cannot be interrupted).
func (k *volumeKit) Check(ctx context.Context, deep bool) error {
	ok, err := k.mounted()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: not mounted: %w", k.desc, ErrNotRunning)
	}
	if !deep {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- k.probe() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s: read/write probe did not finish: %w", k.desc, ctx.Err())
	}
}

// probe writes, syncs, reads back and deletes a file under the target.
func (k *volumeKit) probe() error {
	var rnd [16]byte
	rand.Read(rnd[:])
	want := []byte("backstop volume probe " + hex.EncodeToString(rnd[:]) + "\n")
	name := filepath.Join(k.target, ".backstop-probe-"+hex.EncodeToString(rnd[:4]))
	defer os.Remove(name)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%s: probe: create: %w", k.desc, err)
	}
	defer f.Close()
	if _, err := f.Write(want); err != nil {
		return fmt.Errorf("%s: probe: write: %w", k.desc, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: probe: fsync: %w", k.desc, err)
	}
	got := make([]byte, len(want)+1)
	n, err := f.ReadAt(got, 0)
	if err != nil && n != len(want) {
		return fmt.Errorf("%s: probe: read back: %w", k.desc, err)
	}
	if !bytes.Equal(got[:n], want) {
		return fmt.Errorf("%s: probe: read back %d bytes that differ from those written", k.desc, n)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: probe: close: %w", k.desc, err)
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("%s: probe: delete: %w", k.desc, err)
	}
	return nil
}

// mountFlags splits mount options into mount(2) flags and the data
// string for the file system; rec is set for rbind.
var mountFlagNames = map[string]struct {
	set   bool
	flags uintptr
}{
	"ro":          {true, unix.MS_RDONLY},
	"rw":          {false, unix.MS_RDONLY},
	"nosuid":      {true, unix.MS_NOSUID},
	"suid":        {false, unix.MS_NOSUID},
	"nodev":       {true, unix.MS_NODEV},
	"dev":         {false, unix.MS_NODEV},
	"noexec":      {true, unix.MS_NOEXEC},
	"exec":        {false, unix.MS_NOEXEC},
	"sync":        {true, unix.MS_SYNCHRONOUS},
	"async":       {false, unix.MS_SYNCHRONOUS},
	"dirsync":     {true, unix.MS_DIRSYNC},
	"noatime":     {true, unix.MS_NOATIME},
	"atime":       {false, unix.MS_NOATIME},
	"nodiratime":  {true, unix.MS_NODIRATIME},
	"diratime":    {false, unix.MS_NODIRATIME},
	"relatime":    {true, unix.MS_RELATIME},
	"norelatime":  {false, unix.MS_RELATIME},
	"strictatime": {true, unix.MS_STRICTATIME},
	"lazytime":    {true, unix.MS_LAZYTIME},
	"nolazytime":  {false, unix.MS_LAZYTIME},
	"silent":      {true, unix.MS_SILENT},
	"loud":        {false, unix.MS_SILENT},
	"defaults":    {true, 0},
}

func mountFlags(options string) (flags uintptr, data string, rec bool, err error) {
	var rest []string
	for o := range strings.SplitSeq(options, ",") {
		o = strings.TrimSpace(o)
		switch o {
		case "":
			continue
		case "rbind":
			rec = true
			continue
		case "bind":
			continue
		case "remount", "move":
			return 0, "", false, fmt.Errorf("option %q is not allowed", o)
		}
		if f, ok := mountFlagNames[o]; ok {
			if f.set {
				flags |= f.flags
			} else {
				flags &^= f.flags
			}
			continue
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ","), rec, nil
}

// Start creates the target directory (mkdir -p) and mounts the source on
// it, unless it is mounted there already.
func (k *volumeKit) Start(ctx context.Context) error {
	bind, err := k.bindLike()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(k.target, 0o755); err != nil {
		return fmt.Errorf("%s: create target: %w", k.desc, err)
	}
	if ok, err := k.mounted(); err == nil && ok {
		return nil
	}
	if ms, err := mountsAt(k.resolveTarget(false)); err == nil && len(ms) == 0 {
		k.resolved = k.resolveTarget(true) // nothing mounted: safe to look at it
	}
	flags, data, rec, err := mountFlags(k.options)
	if err != nil {
		return fmt.Errorf("%s: options: %w", k.desc, err)
	}
	fi, err := os.Stat(k.source)
	if err != nil {
		return fmt.Errorf("%s: source: %w", k.desc, err)
	}
	target := k.realTarget()
	switch {
	case bind:
		bflags := uintptr(unix.MS_BIND)
		if rec || k.fstype == "rbind" {
			bflags |= unix.MS_REC
		}
		if err := unix.Mount(k.source, target, "", bflags, ""); err != nil {
			return fmt.Errorf("%s: bind mount: %w", k.desc, err)
		}
		// The kernel ignores other flags on a new bind mount: apply them
		// with a remount of the bind.
		if flags&^unix.MS_SILENT != 0 {
			if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
				unix.Unmount(target, unix.MNT_DETACH)
				return fmt.Errorf("%s: apply options %q to the bind mount: %w", k.desc, k.options, err)
			}
		}
	case fi.Mode().IsRegular():
		// A disk image: mount(8) sets up the loop device (with
		// autoclear, so unmounting frees it).
		if k.fstype == "" {
			return fmt.Errorf("%s: fstype is required to mount a disk image", k.desc)
		}
		opts := "loop"
		if k.options != "" {
			opts += "," + k.options
		}
		out, err := exec.CommandContext(ctx, "mount", "-t", k.fstype, "-o", opts, k.source, target).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: mount -o %s: %v: %s", k.desc, opts, err, strings.TrimSpace(string(out)))
		}
	default:
		if k.fstype == "" {
			return fmt.Errorf("%s: fstype is required for a source that is not a directory", k.desc)
		}
		if err := unix.Mount(k.source, target, k.fstype, flags, data); err != nil {
			return fmt.Errorf("%s: mount -t %s: %w", k.desc, k.fstype, err)
		}
	}
	k.log.InfoContext(ctx, "volume: mounted", "source", k.source, "target", k.target)
	return nil
}

// Stop unmounts the target. While it is busy (EBUSY: a process has a file
// or its working directory there) it retries for a second, then detaches
// it lazily (MNT_DETACH) and logs that: the mount disappears from the
// name space at once, but the file system stays alive until its last user
// goes, so the device is not free yet.
func (k *volumeKit) Stop(ctx context.Context) error {
	target := k.realTarget()
	for range maxStacked {
		ok, err := k.mounted()
		switch {
		case errors.Is(err, errOtherMount):
			return nil // not ours: our volume is not mounted
		case err != nil:
			// Typically the source is gone (a vanished device): what is
			// mounted on the target is then ours, as far as we can tell.
			ms, merr := mountsAt(target)
			if merr != nil {
				return fmt.Errorf("%s: %w", k.desc, merr)
			}
			if len(ms) == 0 {
				return nil
			}
			k.log.WarnContext(ctx, "volume: cannot compare the mount with the source; unmounting the target anyway", "error", err)
		case !ok:
			return nil
		}
		if err := k.unmount(ctx, target); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: still mounted after %d unmounts", k.desc, maxStacked)
}

func (k *volumeKit) unmount(ctx context.Context, target string) error {
	giveUp := time.Now().Add(busyRetryFor)
	for {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL): // EINVAL: not a mount point (any more)
			k.log.InfoContext(ctx, "volume: unmounted", "target", k.target)
			return nil
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("%s: unmount: %w", k.desc, err)
		}
		if time.Now().After(giveUp) || ctx.Err() != nil {
			break
		}
		time.Sleep(busyRetryGap)
	}
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("%s: target busy, and lazy unmount failed: %w", k.desc, err)
	}
	k.log.WarnContext(ctx, "volume: target busy; detached it lazily (MNT_DETACH): processes still using it keep the file system alive",
		"target", k.target, "retried_for", busyRetryFor)
	return nil
}

// Fence force-unmounts the target (MNT_FORCE|MNT_DETACH) without waiting:
// it aborts pending requests on file systems that support it (NFS) and
// detaches the mount at once. It looks only at the target's entry in
// mountinfo, never at the source, which may hang.
func (k *volumeKit) Fence() error {
	target := k.realTarget()
	for range maxStacked {
		ms, err := mountsAt(target)
		if err != nil {
			return fmt.Errorf("%s: %w", k.desc, err)
		}
		if len(ms) == 0 {
			return nil
		}
		if err := unix.Unmount(target, unix.MNT_FORCE|unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%s: forced unmount: %w", k.desc, err)
		}
	}
	return nil
}
