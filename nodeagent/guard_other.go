//go:build !linux

package nodeagent

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

var errGuardLinuxOnly = errors.New("the fence guard needs Linux")

func lockFile(string) (func(), bool, error)       { return nil, false, errGuardLinuxOnly }
func guardPriority() error                        { return errGuardLinuxOnly }
func peerPID(*net.UnixConn) int                   { return 0 }
func killAndWait(*os.Process, time.Duration) bool { return false }
func guardSysProcAttr() *syscall.SysProcAttr      { return nil }
