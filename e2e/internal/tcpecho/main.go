// Command tcpecho is the protected service of the e2e tests: a TCP server
// that greets each client with the name of the node it runs on, so a test
// connecting to a virtual IP learns which node answered.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
)

func main() {
	listen := flag.String("listen", ":7000", "address to listen on")
	name := flag.String("name", "", "node name to greet with")
	pidFile := flag.String("pid-file", "", "write the PID here")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpecho:", err)
		os.Exit(1)
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "tcpecho:", err)
			os.Exit(1)
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "hello from %s\n", *name)
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintf(c, "%s\n", s.Text())
			}
		}()
	}
}
