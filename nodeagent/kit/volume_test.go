package kit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
)

// inMountns runs the helper in a private mount namespace, so that its
// mounts never reach the test's (or the host's) mount table and vanish
// with the helper process.
var inMountns = []string{"unshare", "--mount", "--propagation", "private"}

func volumeResource(params map[string]any) backstop.Resource {
	return backstop.Resource{Name: "data", Kind: backstop.KindVolume, Params: params}
}

// noMountAt fails t if the test process sees a mount at path.
func noMountAt(t *testing.T, path string) {
	t.Helper()
	ms, err := mountsAt(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) > 0 {
		t.Errorf("the test's mount namespace has a mount on %s: %+v", path, ms)
	}
}

func TestVolumeBind(t *testing.T) {
	needRoot(t, "mounts in a private mount namespace")
	needBins(t, "unshare")
	t.Parallel()
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "mnt", "a", "b")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	mountCount := `test "$(grep -c " ` + target + ` " /proc/self/mountinfo)" = `
	res := helper(t, inMountns, helperSpec{Resource: volumeResource(map[string]any{"source": src, "target": target}), Ops: []helperOp{
		{Op: "check"}, // 0
		{Op: "start"},
		{Op: "check"},
		{Op: "deep"},
		{Op: "sh", Arg: `test "$(cat ` + target + `/hello)" = hi && ` + mountCount + `1`},
		{Op: "start"}, // 5: already mounted
		{Op: "sh", Arg: mountCount + `1`},
		{Op: "stop"},
		{Op: "check"},
		{Op: "stop"},
		{Op: "start"}, // 10
		{Op: "cd", Arg: target},
		{Op: "stop"}, // busy: retried, then detached lazily
		{Op: "check"},
		{Op: "cd", Arg: "/"},
		{Op: "start"}, // 15
		{Op: "fence"},
		{Op: "check"},
		{Op: "sh", Arg: mountCount + `0`},
	}})
	expect(t, res, "notrunning", "", "", "", "", "", "", "", "notrunning", "", "", "", "", "notrunning", "", "", "", "notrunning", "")
	t.Logf("volume bind: start %.2f ms, deep check %.2f ms, stop %.2f ms, busy stop (lazy) %.0f ms, fence %.2f ms",
		res[1].MS, res[3].MS, res[7].MS, res[12].MS, res[16].MS)
	noMountAt(t, target)
	ents, _ := os.ReadDir(src)
	if len(ents) != 1 {
		t.Errorf("source holds %d entries after the probes, want only hello", len(ents))
	}
}

func TestVolumeOptionsAndForeignMount(t *testing.T) {
	needRoot(t, "mounts in a private mount namespace")
	needBins(t, "unshare", "mount")
	t.Parallel()
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "ro")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	res := helper(t, inMountns, helperSpec{Resource: volumeResource(map[string]any{"source": src, "target": target, "options": "ro,nodev"}), Ops: []helperOp{
		{Op: "start"}, {Op: "check"}, {Op: "deep"}, {Op: "stop"},
		// Something else mounted on the target is not the volume.
		{Op: "sh", Arg: "mount -t tmpfs other " + target}, {Op: "check"}, {Op: "stop"}, {Op: "sh", Arg: "umount " + target},
	}})
	expect(t, res, "", "", "read-only file system", "", "", "target is a mount point of other (tmpfs), not of the source", "", "")
	noMountAt(t, target)

	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"source": src, "target": target, "fstype": "ext4"}, `source is a directory, but fstype is "ext4"`},
		{map[string]any{"source": filepath.Join(dir, "nope"), "target": target}, "no such file or directory"},
		{map[string]any{"source": src, "target": target, "options": "remount"}, `option "remount" is not allowed`},
	} {
		inst, err := New(volumeResource(tc.params), Env{})
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Start(t.Context()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%v) = %v, want an error containing %q", tc.params, err, tc.want)
		}
	}
	if _, err := New(volumeResource(map[string]any{"source": "rel", "target": target}), Env{}); err == nil {
		t.Error("relative source accepted")
	}
}

func TestVolumeDiskImage(t *testing.T) {
	needRoot(t, "mounts a loop device in a private mount namespace")
	needBins(t, "unshare", "mount", "mkfs.ext4", "losetup")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no loop device support: %v", err)
		}
		t.Skipf("no loop device support: %v", err)
	}
	t.Parallel()
	dir := t.TempDir()
	img, target := filepath.Join(dir, "vol.img"), filepath.Join(dir, "vol")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", img)
	t.Cleanup(func() { // a loop device is global: make sure none is left
		if out := strings.TrimSpace(run(t, "losetup", "-j", img)); out != "" {
			t.Errorf("loop device left behind: %s", out)
		}
	})
	res := helper(t, inMountns, helperSpec{Resource: volumeResource(map[string]any{"source": img, "target": target, "fstype": "ext4", "options": "noatime"}), Ops: []helperOp{
		{Op: "check"}, {Op: "start"}, {Op: "check"}, {Op: "deep"}, {Op: "sh", Arg: "touch " + target + "/kept"}, {Op: "stop"}, {Op: "check"},
		{Op: "start"}, {Op: "sh", Arg: "test -f " + target + "/kept"}, {Op: "fence"}, {Op: "check"},
		{Op: "sh", Arg: `test -z "$(losetup -j ` + img + `)"`},
	}})
	expect(t, res, "notrunning", "", "", "", "", "", "notrunning", "", "", "", "notrunning", "")
	t.Logf("volume ext4 image: start %.1f ms, deep check %.2f ms, stop %.1f ms, fence %.2f ms", res[1].MS, res[3].MS, res[5].MS, res[9].MS)
}

func TestMountinfoUnescape(t *testing.T) {
	if got := unescapeMount(`/mnt/with\040space\\x`); got != `/mnt/with space\\x` {
		t.Errorf("unescapeMount = %q", got)
	}
	flags, data, rec, err := mountFlags("ro,rbind,size=10m,noexec,rw")
	if err != nil || flags != 0x8 || data != "size=10m" || !rec { // MS_NOEXEC; rw cleared ro
		t.Errorf("mountFlags = %#x %q %v %v", flags, data, rec, err)
	}
}
