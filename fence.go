package backstop

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Fence device limits.
const (
	// DefaultFenceTimeout is the longest run of one fence agent call
	// when the device names none.
	DefaultFenceTimeout = 20 * time.Second
	// MaxFenceTimeout bounds a device's timeout.
	MaxFenceTimeout = 300 * time.Second
	maxFenceParams  = 64
	maxFenceValue   = 1024
	maxFenceName    = 64
)

var (
	fenceAgentRE = regexp.MustCompile(`^fence_[a-z0-9_]+$`)
	fenceParamRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// FenceDevice is a node's fence device: a program of Debian's
// fence-agents (fence_redfish, fence_ipmilan, ...) and the options it
// reads on stdin. The secret options are stored sealed, bound to the
// node id; only their names are ever shown.
type FenceDevice struct {
	NodeID       string
	ClusterID    string
	Agent        string
	Params       map[string]string
	SecretNames  []string
	SecretSealed []byte
	Timeout      time.Duration
	LastFencedAt *time.Time
	Version      int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// FenceSealID is what a node's sealed fence secrets are bound to (the
// associated data of their AES-GCM seal): secrets copied onto another
// node's row do not open.
func FenceSealID(nodeID string) string { return "fence-device/" + nodeID }

// ValidFenceAgentName reports whether name may name a fence agent: a
// plain file name, so it can never leave the fence-agents directory.
func ValidFenceAgentName(name string) bool { return fenceAgentRE.MatchString(name) }

// ValidateFenceParams checks options written to a fence agent's stdin,
// one name=value line each: a name or value that could end the line
// would let an operator's input set options of its own (action=on).
// "action" is backstopd's to set.
func ValidateFenceParams(v *ValidationError, prefix string, params map[string]string) {
	if len(params) > maxFenceParams {
		v.Add(prefix, "at most %d options", maxFenceParams)
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		val := params[k]
		switch {
		case len(k) > maxFenceName || !fenceParamRE.MatchString(k):
			v.Add(prefix+"/"+k, "option names match ^[a-z][a-z0-9_]*$ (at most %d characters)", maxFenceName)
		case k == "action":
			v.Add(prefix+"/"+k, "action is set by backstopd (off, then status)")
		case len(val) > maxFenceValue:
			v.Add(prefix+"/"+k, "at most %d characters", maxFenceValue)
		case strings.ContainsAny(val, "\r\n\x00"):
			v.Add(prefix+"/"+k, "must not contain a line break or NUL: the fence agent reads one option per line")
		}
	}
}

// FenceStdin renders the stdin a fence agent reads for action: the
// action line, then the options, then the secrets, sorted by name. The
// options were validated on the way in (no line breaks).
func FenceStdin(action string, params, secrets map[string]string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "action=%s\n", action)
	for _, m := range []map[string]string{params, secrets} {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(&b, "%s=%s\n", k, m[k])
		}
	}
	return []byte(b.String())
}

// FenceJob is a fence the leader owes: a down node with a fence device
// and no fence confirmed since it went down (DownSince).
type FenceJob struct {
	Device    FenceDevice
	NodeName  string
	DownSince time.Time
}

// FenceResult is the outcome of one fence attempt.
type FenceResult struct {
	ClusterID string
	NodeID    string
	NodeName  string
	// DownSince is the state_since of the down episode fenced: a result
	// for an earlier episode (the node came back and died again) is not
	// taken as a fence of this one.
	DownSince time.Time
	OK        bool
	Agent     string
	Duration  time.Duration
	Attempt   int
	// Detail says what failed (exit codes, the agent's stderr, truncated;
	// never a secret).
	Detail string
}
