package backstop

import (
	"time"
)

// Replica is one backstopd process.
type Replica struct {
	ID         string
	Address    string
	Version    string
	StartedAt  time.Time
	LastSeenAt time.Time
	Leader     bool
}

// ControlPlane is the set of replicas and who leads.
type ControlPlane struct {
	Term        int64
	LeaderID    string
	LeaderSince *time.Time
	Replicas    []Replica
}
