// Package nslab builds Backstop test clusters out of Linux network
// namespaces for programs that are not tests (the failover benchmark,
// e2e/cmd/failbench): a bridge namespace, the host attached at
// 198.19.K.1 where backstopd listens, one namespace per node with eth0
// and eth1 on the bridge, backstop-agent in each node's namespace (and a
// private mount namespace of its own), and the faults and probes of the
// e2e tests (node crash, link loss, who holds an address, who listens on
// a port), and the never-two-copies checker (Invariant), which the e2e
// harness uses too: address events over netlink, measured as intervals,
// and listeners sampled about every millisecond per node.
//
// It mirrors the e2e test harness (e2e/netns_test.go,
// e2e/nscluster_test.go, e2e/agents_harness_test.go), which is test code
// and cannot be imported; the functions here return errors instead of
// failing a *testing.T. It needs root and iproute2, and works on Linux
// only.
package nslab
