package backstop

// Timing holds a cluster's effective failure-detection timing. The named
// profiles are the defaults of the design brief; custom values must pass
// Validate.
type Timing struct {
	HeartbeatMS          int `json:"heartbeat_ms"`
	LeaseTTLMS           int `json:"lease_ttl_ms"`
	ServerGraceMS        int `json:"server_grace_ms"`
	PathHeartbeatMS      int `json:"path_heartbeat_ms"`
	PathDeadAfter        int `json:"path_dead_after"`
	QuickCheckIntervalMS int `json:"quick_check_interval_ms"`
	DeepCheckIntervalMS  int `json:"deep_check_interval_ms"`
}

// Timing profile names.
const (
	ProfileFast   = "fast"
	ProfileLAN    = "lan"
	ProfileWAN    = "wan"
	ProfileCustom = "custom"
)

// Profiles are the named timing profiles of the design brief.
var Profiles = map[string]Timing{
	ProfileFast: {HeartbeatMS: 50, LeaseTTLMS: 250, ServerGraceMS: 50, PathHeartbeatMS: 50, PathDeadAfter: 3, QuickCheckIntervalMS: 200, DeepCheckIntervalMS: 2000},
	ProfileLAN:  {HeartbeatMS: 250, LeaseTTLMS: 1000, ServerGraceMS: 250, PathHeartbeatMS: 200, PathDeadAfter: 3, QuickCheckIntervalMS: 500, DeepCheckIntervalMS: 5000},
	ProfileWAN:  {HeartbeatMS: 2000, LeaseTTLMS: 10000, ServerGraceMS: 2000, PathHeartbeatMS: 1000, PathDeadAfter: 5, QuickCheckIntervalMS: 2000, DeepCheckIntervalMS: 30000},
}

// Validate checks the relations between timing values (the ranges of each
// value are enforced by the API contract). at is the JSON pointer of the
// timing object in the request, used to name offending fields.
//
// The rules keep the safety promise: an agent must send at least three
// heartbeats per lease so one lost packet never expires it; a dead path
// must be noticed within one lease so the server can ask peers before it
// judges a node; the server's grace must cover at least one heartbeat so
// the agent's deadline passes first.
func (t Timing) Validate(at string) error {
	v := &ValidationError{}
	if t.HeartbeatMS <= 0 || t.LeaseTTLMS <= 0 || t.ServerGraceMS <= 0 || t.PathHeartbeatMS <= 0 || t.PathDeadAfter <= 0 || t.QuickCheckIntervalMS <= 0 || t.DeepCheckIntervalMS <= 0 {
		v.Add(at, "every timing value must be positive")
		return v
	}
	if t.HeartbeatMS*3 >= t.LeaseTTLMS {
		v.Add(at+"/heartbeat_ms", "heartbeat_ms (%d) must be below a third of lease_ttl_ms (%d)", t.HeartbeatMS, t.LeaseTTLMS)
	}
	if t.PathHeartbeatMS*t.PathDeadAfter > t.LeaseTTLMS {
		v.Add(at+"/path_heartbeat_ms", "path_heartbeat_ms × path_dead_after (%d) must not exceed lease_ttl_ms (%d)", t.PathHeartbeatMS*t.PathDeadAfter, t.LeaseTTLMS)
	}
	if t.ServerGraceMS < t.HeartbeatMS {
		v.Add(at+"/server_grace_ms", "server_grace_ms (%d) must be at least heartbeat_ms (%d)", t.ServerGraceMS, t.HeartbeatMS)
	}
	if t.DeepCheckIntervalMS < t.QuickCheckIntervalMS {
		v.Add(at+"/deep_check_interval_ms", "deep_check_interval_ms (%d) must be at least quick_check_interval_ms (%d)", t.DeepCheckIntervalMS, t.QuickCheckIntervalMS)
	}
	return v.Err()
}

// ResolveTiming returns the timing of a profile. For ProfileCustom the given
// values are required and validated; for a named profile they must be
// absent. at is the JSON pointer of the request's timing field.
func ResolveTiming(profile string, custom *Timing, at string) (Timing, error) {
	if profile == ProfileCustom {
		if custom == nil {
			return Timing{}, Invalid(at, "timing is required with timing_profile custom")
		}
		if err := custom.Validate(at); err != nil {
			return Timing{}, err
		}
		return *custom, nil
	}
	t, ok := Profiles[profile]
	if !ok {
		return Timing{}, Invalid("/timing_profile", "unknown timing profile %q", profile)
	}
	if custom != nil {
		return Timing{}, Invalid(at, "timing values are accepted only with timing_profile custom (profile %q has fixed values)", profile)
	}
	return t, nil
}
