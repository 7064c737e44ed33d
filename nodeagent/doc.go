// Package nodeagent will hold backstop-agent, the program on each protected
// node: enrollment, heartbeats and leases, signed-command verification,
// resource kits, monitoring, local recovery and self-fencing. It arrives
// with the agent issue; until then there is deliberately no agent binary.
package nodeagent
