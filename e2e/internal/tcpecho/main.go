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
	"time"
)

func main() {
	listen := flag.String("listen", ":7000", "address to listen on")
	name := flag.String("name", "", "node name to greet with")
	pidFile := flag.String("pid-file", "", "write the PID here")
	dial := flag.String("dial", "", "instead of serving, connect to this address and print the greeting")
	flag.Parse()
	if *dial != "" {
		c, err := net.DialTimeout("tcp", *dial, time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcpecho:", err)
			os.Exit(1)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcpecho:", err)
			os.Exit(1)
		}
		fmt.Print(line)
		return
	}
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
