package nodeagent

import (
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// kernelRelease returns uname's release, e.g. 6.1.0-18-amd64.
func kernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// clockBoottime is CLOCK_BOOTTIME of <linux/time.h>.
const clockBoottime = 7

// bootClock returns a clock that is monotonic across process restarts (it
// counts from boot, suspend included) and the id of the current boot, so
// that a lease deadline can survive an agent restart without trusting the
// wall clock. ok is false when either is unavailable.
func bootClock() (now time.Duration, bootID string, ok bool) {
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0, "", false
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return 0, "", false
	}
	return time.Duration(ts.Nano()), strings.TrimSpace(string(b)), true
}
