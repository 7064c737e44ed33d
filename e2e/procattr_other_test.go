//go:build !linux

package e2e

import "syscall"

// childAttr has no parent-death signal outside Linux: the cleanups of the
// tests stop every child.
func childAttr() *syscall.SysProcAttr { return nil }
