package nslab

import (
	"bufio"
	"context"
	"net"
	"strings"
	"time"
)

func dial(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

func readLine(c net.Conn, timeout time.Duration) string {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	return line
}

// AwaitGreeting polls addr (host:port) with a new TCP connection every
// `every` (each attempt runs on its own, bounded by attemptTimeout, so a
// SYN lost to a dead node's stale ARP entry does not hold up the next
// attempt) until one is greeted with want. It returns when that
// connection was established. It gives up when ctx ends.
func AwaitGreeting(ctx context.Context, addr, want string, every, attemptTimeout time.Duration) (time.Time, error) {
	at, _, err := AwaitGreetingFrom(ctx, addr, func(g string) bool { return g == want }, every, attemptTimeout)
	return at, err
}

// AwaitGreetingFrom is AwaitGreeting for the first greeting that accept
// takes; it returns that greeting too.
func AwaitGreetingFrom(ctx context.Context, addr string, accept func(string) bool, every, attemptTimeout time.Duration) (time.Time, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type greeted struct {
		at time.Time
		g  string
	}
	found := make(chan greeted, 1)
	sem := make(chan struct{}, 64) // attempts in flight
	tick := time.NewTicker(every)
	defer tick.Stop()
	attempt := func() {
		defer func() { <-sem }()
		d := net.Dialer{Timeout: attemptTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return
		}
		connected := time.Now()
		defer c.Close()
		if g := strings.TrimSpace(readLine(c, attemptTimeout)); accept(g) {
			select {
			case found <- greeted{connected, g}:
			default:
			}
		}
	}
	for {
		select {
		case sem <- struct{}{}:
			go attempt()
		default: // too many in flight: skip this tick
		}
		select {
		case f := <-found:
			return f.at, f.g, nil
		case <-ctx.Done():
			return time.Time{}, "", ctx.Err()
		case <-tick.C:
		}
	}
}
