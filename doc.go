// Package cluster holds Backstop's domain model: clusters, nodes,
// communication paths, hierarchies of resources, API tokens and audit
// records, the rules that make them valid, and the sentinel errors every
// layer speaks. It imports only the standard library so that the store,
// the HTTP server and the node agent can all depend on it (the shape of
// benbjohnson/wtf's root package; the module's top level is reserved, so it
// lives here).
package cluster
