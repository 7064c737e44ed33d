//go:build !linux

package nodeagent

import "time"

// kernelRelease is unknown off Linux.
func kernelRelease() string { return "" }

// bootClock is unavailable off Linux: a restarted agent then treats its
// lease as expired.
func bootClock() (now time.Duration, bootID string, ok bool) { return 0, "", false }
