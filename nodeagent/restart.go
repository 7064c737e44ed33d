package nodeagent

import "time"

// maxRestartHold bounds Config.RestartHold; the control plane refuses
// longer holds too (Heartbeat.restart_hold_ms).
const maxRestartHold = 120 * time.Second
