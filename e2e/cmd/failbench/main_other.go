//go:build !linux

// Command failbench measures failover times with nodes built out of Linux
// network namespaces; see main.go. It only runs on Linux.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "failbench: needs Linux (network namespaces)")
	os.Exit(1)
}
