// Package nodeagent is backstop-agent, the program on each protected node.
//
// An Agent enrolls once with a one-time token (generating its Ed25519 key
// pair and pinning the control plane's command-signing keys), then runs a
// few independent loops until its context ends:
//
//   - heartbeat: renews the node lease every timing.heartbeat_ms and
//     reports hierarchy states, resource health, path reachability and
//     self-fencings; it also notices configuration changes and applies
//     them live (the configuration is cached on disk so the agent can
//     monitor and fence before the control plane answers);
//   - commands: long-polls for signed commands, verifies each one
//     (envelope.Verifier with a memory of accepted ids, epochs and terms
//     kept in the data directory), records it durably, runs it and reports
//     the per-step result, retrying until the control plane has it;
//   - monitors: one per in-service resource, running the quick and deep
//     checks, restarting a failed resource and its dependents locally up to
//     local_recovery.max_restarts within the window, then failing the
//     hierarchy on this node;
//   - fence watcher: when the lease has run out and this node cannot see a
//     majority of its cluster over the communication paths, it fences every
//     active hierarchy at once (kit Fence, not an orderly stop);
//   - paths: authenticated UDP heartbeats over every communication path,
//     with per-path state, round-trip time and loss;
//   - guard link: grants the fence guard (guard.go), a process of its own
//     that outlives the agent, its next deadline, and follows the
//     fencings the guard does when the agent was too late.
//
// The fence guard (`backstop-agent guard`) fences the node when the agent
// dies, hangs or crash-loops without renewing its lease; on a clean stop
// the agent first asks the control plane for a restart hold
// (restart.go), so that the next agent process adopts the running
// hierarchies instead.
//
// The agent never stops resources because it is shutting down: an agent
// restart must not take services down. It brings nothing in service except
// on a valid, fresh, signed command.
//
// Log lines carry stable keys (event, hierarchy_id, resource, command_id,
// reason, lease_remaining_ms, ...) so that tests and operators can follow
// what happened; logkeys.go lists them.
package nodeagent
