package server

// OnPollWaiting sets the test signal called each time a long poll of
// node nodeID found no command and starts waiting to be woken.
func (s *Server) OnPollWaiting(f func(nodeID string)) { s.agentHandlers.pollWaiting.Store(&f) }

// ReportDigest is reportDigest, for tests.
var ReportDigest = reportDigest

// TelemetryDigest is telemetryDigest, for tests.
var TelemetryDigest = telemetryDigest
