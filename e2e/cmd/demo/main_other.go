//go:build !linux

// Command demo is `make demo`; see main.go. It only runs on Linux.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "demo: needs Linux")
	os.Exit(1)
}
