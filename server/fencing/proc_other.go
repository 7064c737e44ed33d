//go:build !unix

package fencing

import "os/exec"

func setProcessGroup(*exec.Cmd) {}

func raisePriority(*exec.Cmd) {}
