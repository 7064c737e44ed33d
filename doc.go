// Package backstop is Backstop's domain model: clusters, nodes,
// communication paths, hierarchies of resources, placements, fence
// devices, API tokens and audit records, the rules that make them valid,
// the event taxonomy, and the sentinel errors every layer speaks. It
// imports only the standard library, so that the store, the HTTP server,
// the node agent and the command envelope all depend on it and it on
// none of them: imports point inward, as in benbjohnson/wtf, whose root
// package this follows.
package backstop
