package backstop

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// EventType describes one type of the event taxonomy: the name events
// carry, the severity they are written with, the SNMP notification that
// carries them (BACKSTOP-MIB, under backstopNotifications) and whether
// anything produces it yet.
type EventType struct {
	Type     string
	Severity string
	// Trap is the last arc of the notification's OID (and its name in
	// BACKSTOP-MIB is TrapName).
	Trap     int
	TrapName string
	// Produced is false for types reserved in the taxonomy whose producer
	// (the agent's path and resource reports) does not exist yet.
	Produced bool
	About    string
}

// EventTypes is the event taxonomy, in trap-number order. The contract's
// Event schema, README and openapi/BACKSTOP-MIB.txt document the same
// list; a test keeps the MIB in step.
var EventTypes = []EventType{
	{"node.down", SeverityCritical, 1, "backstopNodeDown", true, "the node's lease expired and a live peer sees it dead on every path; its hierarchies fail over (once its fence device, if it has one, confirmed it off)"},
	{"node.unreachable", SeverityWarning, 2, "backstopNodeUnreachable", true, "the control plane lost the node but a peer still sees it (or it has no peer); nothing moves"},
	{"node.up", SeverityInfo, 3, "backstopNodeUp", true, "the node heartbeats again (or for the first time)"},
	{"node.maintenance_started", SeverityInfo, 4, "backstopNodeMaintenanceStarted", true, "an operator put the node in maintenance"},
	{"node.maintenance_ended", SeverityInfo, 5, "backstopNodeMaintenanceEnded", true, "the node left maintenance"},
	{"node.self_fenced", SeverityCritical, 6, "backstopNodeSelfFenced", true, "the agent fenced its hierarchies itself (lease lost without a majority)"},
	{"path.down", SeverityWarning, 7, "backstopPathDown", true, "a communication path stopped carrying heartbeats"},
	{"path.up", SeverityInfo, 8, "backstopPathUp", true, "a communication path carries heartbeats again"},
	{"resource.check_failed", SeverityWarning, 9, "backstopResourceCheckFailed", true, "a quick or deep check of a resource failed"},
	{"local_recovery.started", SeverityWarning, 10, "backstopLocalRecoveryStarted", true, "the agent restarts a failed resource on the same node"},
	{"local_recovery.succeeded", SeverityInfo, 11, "backstopLocalRecoverySucceeded", true, "the restarted resource passes its checks"},
	{"local_recovery.failed", SeverityCritical, 12, "backstopLocalRecoveryFailed", true, "local recovery gave up; the hierarchy fails over"},
	{"hierarchy.in_service", SeverityInfo, 13, "backstopHierarchyInService", true, "a hierarchy was brought in service on a node"},
	{"hierarchy.out_of_service", SeverityInfo, 14, "backstopHierarchyOutOfService", true, "a hierarchy was taken out of service on a node"},
	{"hierarchy.failed", SeverityCritical, 15, "backstopHierarchyFailed", true, "a hierarchy failed and no node can take it, or a bring-up failed"},
	{"failover.started", SeverityCritical, 16, "backstopFailoverStarted", true, "the engine moves a hierarchy away from a failed node"},
	{"failover.completed", SeverityInfo, 17, "backstopFailoverCompleted", true, "the failover's hierarchy is in service on its new node"},
	{"failover.failed", SeverityCritical, 18, "backstopFailoverFailed", true, "the failover could not bring the hierarchy in service"},
	{"switchover.started", SeverityInfo, 19, "backstopSwitchoverStarted", true, "an operator's switchover started"},
	{"switchover.completed", SeverityInfo, 20, "backstopSwitchoverCompleted", true, "the switchover ended with the hierarchy in service"},
	{"switchover.failed", SeverityCritical, 21, "backstopSwitchoverFailed", true, "the switchover failed"},
	{"switchback.possible", SeverityInfo, 22, "backstopSwitchbackPossible", true, "a higher-priority node is back; intelligent switchback leaves the move to an operator"},
	{"switchback.started", SeverityInfo, 23, "backstopSwitchbackStarted", true, "an automatic switchback started"},
	{"switchback.completed", SeverityInfo, 24, "backstopSwitchbackCompleted", true, "the switchback ended with the hierarchy on its preferred node"},
	{"switchback.failed", SeverityCritical, 25, "backstopSwitchbackFailed", true, "the switchback failed"},
	{"command.rejected", SeverityWarning, 26, "backstopCommandRejected", true, "an agent refused a signed command (signature, epoch, expiry, ...)"},
	{"leader.changed", SeverityInfo, 27, "backstopLeaderChanged", true, "a backstopd replica became leader (written to every cluster's log)"},
	{"delivery.dead_lettered", SeverityWarning, 28, "backstopDeliveryDeadLettered", true, "a webhook or trap delivery was given up after its retry budget or a permanent error"},
	{"node.restarting", SeverityInfo, 29, "backstopNodeRestarting", true, "the node's agent is restarting; its lease is held and its hierarchies stay in place for the announced window"},
	{"fence.failed", SeverityCritical, 30, "backstopFenceFailed", true, "fencing a down node through its fence device failed (or did not confirm it off); nothing moves off the node, the fence is retried"},
	{"fence.succeeded", SeverityInfo, 31, "backstopFenceSucceeded", true, "the node's fence device confirmed it off; its hierarchies fail over"},
	{"config.captured", SeverityInfo, 32, "backstopConfigCaptured", true, "the node in service uploaded a new version of a `files` resource (details: resource, version, sha256)"},
	{"config.installed", SeverityInfo, 33, "backstopConfigInstalled", true, "a node bringing a hierarchy in service installed a version of a `files` resource, or started with its own files (details: resource, version, sha256, source)"},
}

// GenericTrap is the notification for an event type the MIB does not
// name (an older MIB than the server); TestTrap is the one a test sends.
const (
	GenericTrap     = 99
	GenericTrapName = "backstopEvent"
	TestTrap        = 100
	TestTrapName    = "backstopTestNotification"
)

// LookupEventType returns the taxonomy entry of typ.
func LookupEventType(typ string) (EventType, bool) {
	i := slices.IndexFunc(EventTypes, func(e EventType) bool { return e.Type == typ })
	if i < 0 {
		return EventType{}, false
	}
	return EventTypes[i], true
}

// SeverityRank orders severities: info 0, warning 1, critical 2.
func SeverityRank(s string) int {
	switch s {
	case SeverityCritical:
		return 2
	case SeverityWarning:
		return 1
	}
	return 0
}

// ValidEventPattern reports whether p is an event type of the taxonomy or
// a prefix pattern ("node.*") that matches at least one.
func ValidEventPattern(p string) bool {
	for _, e := range EventTypes {
		if MatchEventType(p, e.Type) {
			return true
		}
	}
	return false
}

// MatchEventType reports whether the filter pattern p (an exact type, or
// a prefix ending in ".*") matches typ.
func MatchEventType(p, typ string) bool {
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		return strings.HasSuffix(prefix, ".") && strings.HasPrefix(typ, prefix)
	}
	return p == typ
}

// Target kinds.
const (
	TargetWebhook = "webhook"
	TargetSNMP    = "snmp"
)

// TargetFilter selects the events a target receives. Empty lists mean
// every type and every cluster.
type TargetFilter struct {
	EventTypes  []string
	MinSeverity string
	ClusterIDs  []string
}

// Matches reports whether the filter lets the event through. writeEvent
// does the same in SQL; this is for tests and documentation.
func (f TargetFilter) Matches(e Event) bool {
	if SeverityRank(e.Severity) < SeverityRank(f.MinSeverity) {
		return false
	}
	if len(f.ClusterIDs) > 0 && !slices.Contains(f.ClusterIDs, e.ClusterID) {
		return false
	}
	if len(f.EventTypes) == 0 {
		return true
	}
	return slices.ContainsFunc(f.EventTypes, func(p string) bool { return MatchEventType(p, e.Type) })
}

// Validate checks the filter's fields, naming them under prefix.
func (f TargetFilter) Validate(v *ValidationError, prefix string) {
	for i, p := range f.EventTypes {
		if !ValidEventPattern(p) {
			v.Add(fmt.Sprintf("%s/event_types/%d", prefix, i), "%q is no event type of the taxonomy (nor a prefix such as \"node.*\")", p)
		}
	}
}

// Target is a webhook receiver or an SNMP manager events are delivered
// to. Secret is the sealed secret (never shown).
type Target struct {
	ID          string
	Kind        string
	Name        string
	Description string
	Enabled     bool
	Filter      TargetFilter
	Webhook     *WebhookConfig
	SNMP        *SNMPConfig
	Secret      []byte
	Version     int64
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// WebhookConfig is a webhook receiver.
type WebhookConfig struct {
	URL string `json:"url"`
	// SecretPrefix is the start of the signing secret, to recognise it.
	SecretPrefix string `json:"secret_prefix"`
	// PreviousSecretPrefix and PreviousSecretUntil describe, after a
	// rotation, the previous secret, which signs too until then.
	PreviousSecretPrefix string     `json:"previous_secret_prefix,omitempty"`
	PreviousSecretUntil  *time.Time `json:"previous_secret_until,omitempty"`
}

// SNMP versions and protocols.
const (
	SNMPv2c = "v2c"
	SNMPv3  = "v3"
)

// SNMPConfig is an SNMP manager (trap receiver). Community and the v3
// passphrases are part of the sealed secret, never of this.
type SNMPConfig struct {
	Host         string `json:"host"`
	Port         int    `json:"port"`
	Version      string `json:"version"`
	User         string `json:"user,omitempty"`
	AuthProtocol string `json:"auth_protocol,omitempty"` // SHA, SHA-256
	PrivProtocol string `json:"priv_protocol,omitempty"` // AES
}

// SNMPSecrets are the write-only parts of an SNMP target.
type SNMPSecrets struct {
	Community      string `json:"community,omitempty"`
	AuthPassphrase string `json:"auth_passphrase,omitempty"`
	PrivPassphrase string `json:"priv_passphrase,omitempty"`
}

// Delivery kinds and states.
const (
	DeliveryEvent      = "event"
	DeliveryRedelivery = "redelivery"
	DeliveryPing       = "ping"
	DeliveryTest       = "test"

	DeliveryPending      = "pending"
	DeliveryDelivered    = "delivered"
	DeliveryDeadLettered = "dead_lettered"
	DeliveryCancelled    = "cancelled"
)

// Delivery is one event (or ping, or test) for one target, with its
// attempts.
type Delivery struct {
	// Seq orders a target's deliveries; ID is the public id.
	Seq           int64
	ID            string
	TargetID      string
	TargetKind    string
	Kind          string
	EventID       string
	ClusterID     string
	EventSeq      int64
	EventType     string
	Payload       []byte
	Status        string
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	CreatedAt     time.Time
	FinishedAt    *time.Time
	Log           []DeliveryAttempt
}

// Attempt outcomes.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeFailed    = "failed"
)

// DeliveryAttempt is one try of a delivery.
type DeliveryAttempt struct {
	N          int
	At         time.Time
	Latency    time.Duration
	StatusCode int // 0: none (network error, or a trap)
	Outcome    string
	Error      string
	// Excerpt is at most MaxExcerpt bytes of the receiver's answer.
	Excerpt string
}

// MaxExcerpt bounds the response excerpt kept per attempt.
const MaxExcerpt = 512

// AttemptResult is what a sink reports about one try.
type AttemptResult struct {
	Latency    time.Duration
	StatusCode int
	Excerpt    string
	// Err is nil on success.
	Err error
	// Retryable tells a failure worth trying again (5xx, 408, 429,
	// network errors) from a permanent one (other 4xx).
	Retryable bool
}

// SNMPEngine is the SNMPv3 engine traps are sent as.
type SNMPEngine struct {
	ID    []byte
	Boots int32
	Time  int32
}

// DeliveryJob is the queued job (a River job, kind DeliveryJobKind) that
// makes one delivery. It is inserted in the transaction that writes the
// event, so it exists exactly when the event does.
type DeliveryJob struct {
	DeliveryID int64 `json:"delivery_id"`
}

// DeliveryJobKind names DeliveryJob in the job queue.
const DeliveryJobKind = "backstop_delivery"

// Kind is the job's kind (River's JobArgs).
func (DeliveryJob) Kind() string { return DeliveryJobKind }

// DeliveryQueue is the job queue deliveries run in.
const DeliveryQueue = "delivery"

// EventSignal says an event was committed: enough for a live stream to
// know it should read the log.
type EventSignal struct {
	ClusterID string
	Seq       int64
	Severity  string
	Type      string
}

// TargetBacklog is the pending work of one target.
type TargetBacklog struct {
	TargetID string
	Kind     string
	Name     string
	Pending  int
	// Oldest is when the oldest pending delivery was queued (zero when
	// none is pending).
	Oldest time.Time
}

// WebhookSecretPrefix starts every webhook signing secret (Standard
// Webhooks).
const WebhookSecretPrefix = "whsec_"

// NewWebhookSecret returns a new signing secret: "whsec_" and the base64
// of 32 random bytes, which are the HMAC key.
func NewWebhookSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return WebhookSecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// Event is a recorded state change.
type Event struct {
	ClusterID string
	Seq       int64
	ID        string
	Type      string
	Severity  string
	Subject   map[string]string
	Message   string
	Details   map[string]any
	At        time.Time
}

// Event severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// WebhookSecrets is what a webhook's sealed secret holds: the signing
// secret and, during a rotation's overlap, the previous one with the time
// it stops signing. Both sign meanwhile (Standard Webhooks allows several
// signatures), so receivers switch secrets without refusing a delivery.
type WebhookSecrets struct {
	Current       string    `json:"current"`
	Previous      string    `json:"previous,omitempty"`
	PreviousUntil time.Time `json:"previous_until,omitzero"`
}

// ParseWebhookSecrets reads a webhook's unsealed secret: JSON
// WebhookSecrets, or the bare secret that webhooks created before
// rotation existed hold.
func ParseWebhookSecrets(b []byte) (WebhookSecrets, error) {
	if strings.HasPrefix(string(b), WebhookSecretPrefix) {
		return WebhookSecrets{Current: string(b)}, nil
	}
	var s WebhookSecrets
	if err := json.Unmarshal(b, &s); err != nil || !strings.HasPrefix(s.Current, WebhookSecretPrefix) {
		return WebhookSecrets{}, fmt.Errorf("webhook secret: neither a %s secret nor its JSON form", WebhookSecretPrefix)
	}
	return s, nil
}

// Bytes is s as it is sealed.
func (s WebhookSecrets) Bytes() []byte {
	b, _ := json.Marshal(s) // strings and a time: cannot fail
	return b
}

// Signing returns the secrets that sign a request at now: the current
// one, then the previous one while its overlap lasts.
func (s WebhookSecrets) Signing(now time.Time) []string {
	out := []string{s.Current}
	if s.Previous != "" && now.Before(s.PreviousUntil) {
		out = append(out, s.Previous)
	}
	return out
}

// Rotate returns the secrets after a rotation to next at now: the
// current secret becomes the previous one for overlap (none when overlap
// is 0; an older previous secret is dropped either way).
func (s WebhookSecrets) Rotate(next string, now time.Time, overlap time.Duration) WebhookSecrets {
	out := WebhookSecrets{Current: next}
	if overlap > 0 {
		out.Previous, out.PreviousUntil = s.Current, now.Add(overlap).UTC()
	}
	return out
}
