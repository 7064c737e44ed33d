//go:build linux

package e2e

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// readNetTCP reads /proc/net/tcp as seen from a network namespace, by
// entering it on a locked thread (no process is spawned: the invariant
// checker samples every few milliseconds).
func readNetTCP(ns string) (string, error) {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return "", err
	}
	defer f.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return "", err
	}
	defer self.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return "", err
	}
	b, rerr := os.ReadFile("/proc/thread-self/net/tcp")
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the other namespace: let it die with the
		// goroutine instead of returning it to the pool.
		return "", err
	}
	runtime.UnlockOSThread()
	return string(b), rerr
}
