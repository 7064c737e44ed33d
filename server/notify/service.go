// Package notify delivers Backstop's events to webhook receivers
// (Standard Webhooks signatures) and SNMP managers (gosnmp traps), at
// least once and in order per target.
//
// The outbox is the store's: writeEvent inserts, in the transaction that
// changes the state, one delivery row per matching target and one River
// job per delivery (InsertManyTx), so a delivery exists exactly when its
// event does, and a crash between commit and delivery loses nothing.
// River runs the jobs here: it distributes them over the replicas, keeps
// them across restarts, rescues the jobs of a dead process and wakes them
// when their time comes.
//
// Order: a target's deliveries are made one at a time, in the order the
// events were written (a receiver must never see node.up before the
// node.down it follows). Whichever job runs first for a target takes the
// target's lease (a row lease in PostgreSQL that expires, as in coder's
// notifier) and drains the target's pending deliveries from the oldest;
// the jobs of the deliveries it made find them done. A failed attempt
// schedules the delivery's next attempt (exponential backoff with
// jitter) and holds back the target's later deliveries until then: jobs
// snooze (River's JobSnooze, which spends no attempt) until the head of
// their target is due. The retry budget and schedule are kept per
// delivery in the deliveries table rather than in River's attempt count,
// because a drain makes attempts for other jobs' deliveries. One target
// never waits for another, nor does the engine: each target has its own
// lease and jobs, attempts have a timeout, and delivery uses a pool of
// database connections of its own.
package notify

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/server/seal"
)

// Store is the persistence delivery needs (package store implements it).
type Store interface {
	// LoadDelivery returns a delivery and its target, or
	// backstop.ErrNotFound when the target was deleted.
	LoadDelivery(ctx context.Context, seq int64) (backstop.Delivery, backstop.Target, error)
	ClaimTarget(ctx context.Context, targetID, owner string, ttl time.Duration) (bool, error)
	ReleaseTarget(ctx context.Context, targetID, owner string) error
	HeadDelivery(ctx context.Context, targetID string) (backstop.Delivery, backstop.Target, bool, error)
	RecordAttempt(ctx context.Context, t backstop.Target, d backstop.Delivery, r backstop.AttemptResult, outcome string, next time.Time) (string, error)
	RecordOneShot(ctx context.Context, targetID, kind, eventID, eventType string, payload []byte, r backstop.AttemptResult) (backstop.Delivery, error)
	SNMPEngine(ctx context.Context) (backstop.SNMPEngine, error)
	// DeliveryBacklog returns one entry per existing target, pending
	// deliveries or not: the metrics report it, and the trap sweep
	// closes the sockets of SNMP targets missing from it.
	DeliveryBacklog(ctx context.Context) ([]backstop.TargetBacklog, error)
	// PruneDeliveries deletes up to limit finished deliveries that
	// finished before before, with their attempts; never a pending one.
	PruneDeliveries(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Config configures delivery. Zero values take the defaults of
// DefaultConfig.
type Config struct {
	// Pool runs River (jobs) and should be the Store's pool.
	Pool   *pgxpool.Pool
	Store  Store
	Sealer *seal.Sealer
	Logger *slog.Logger
	// Registry receives the delivery metrics (nil: none).
	Registry prometheus.Registerer

	// MaxAttempts is the retry budget: attempts per delivery, the first
	// included, before it is dead-lettered.
	MaxAttempts int
	// BackoffBase is the wait after the first failed attempt; it doubles
	// after each one up to BackoffMax, with jitter (half of it random).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// AttemptTimeout bounds one attempt (connect, send, answer).
	AttemptTimeout time.Duration
	// Workers is how many deliveries run at once in this process (each
	// target is one at a time).
	Workers int
	// PollInterval is how often River looks for due jobs besides being
	// told of new ones (LISTEN/NOTIFY); it bounds how late a retry can be.
	PollInterval time.Duration
	// JobTimeout bounds one job (a drain of a target's backlog).
	JobTimeout time.Duration
	// Retention is how long a finished delivery (delivered,
	// dead-lettered, cancelled) and its attempts stay in the delivery
	// log; older ones are pruned every PruneInterval, in batches of
	// PruneBatch. Pending deliveries are never pruned.
	Retention     time.Duration
	PruneInterval time.Duration
	PruneBatch    int
}

// DefaultConfig is the production configuration: 12 attempts over about
// 3.5 hours (5 s, 10 s, 20 s, ... capped at 1 h between attempts).
func DefaultConfig() Config {
	return Config{
		MaxAttempts:    12,
		BackoffBase:    5 * time.Second,
		BackoffMax:     time.Hour,
		AttemptTimeout: 10 * time.Second,
		Workers:        20,
		PollInterval:   500 * time.Millisecond,
		JobTimeout:     2 * time.Minute,
		Retention:      30 * 24 * time.Hour,
		PruneInterval:  time.Hour,
		PruneBatch:     1000,
	}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	pick := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.Workers <= 0 {
		c.Workers = d.Workers
	}
	pick(&c.BackoffBase, d.BackoffBase)
	pick(&c.BackoffMax, d.BackoffMax)
	pick(&c.AttemptTimeout, d.AttemptTimeout)
	pick(&c.PollInterval, d.PollInterval)
	pick(&c.JobTimeout, d.JobTimeout)
	pick(&c.Retention, d.Retention)
	pick(&c.PruneInterval, d.PruneInterval)
	if c.PruneBatch <= 0 {
		c.PruneBatch = d.PruneBatch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the relations the design depends on: an attempt must
// end well within the target lease and the job (coder checks its
// dispatch timeout against its lease the same way), or a slow receiver
// could be sent the same event twice at once.
func (c Config) Validate() error {
	switch {
	case c.Store == nil || c.Sealer == nil:
		return errors.New("notify: Store and Sealer are required")
	case c.BackoffMax < c.BackoffBase:
		return fmt.Errorf("notify: the longest backoff (%v) is shorter than the first (%v)", c.BackoffMax, c.BackoffBase)
	case c.JobTimeout < 3*c.AttemptTimeout:
		return fmt.Errorf("notify: the job timeout (%v) must be at least 3 attempt timeouts (%v)", c.JobTimeout, c.AttemptTimeout)
	}
	return nil
}

// leaseTTL is how long a target's lease lasts without renewal: it is
// renewed before every attempt, which ends within AttemptTimeout.
func (c Config) leaseTTL() time.Duration { return c.AttemptTimeout + 15*time.Second }

// Service delivers events: it works the delivery jobs and makes one-shot
// pings and test traps.
type Service struct {
	cfg     Config
	log     *slog.Logger
	river   *river.Client[pgx.Tx]
	hooks   *webhookSink
	traps   *trapSink
	metrics *metrics

	// stopSweep ends the trap sweep Start runs; sweepDone is closed when
	// it has.
	stopSweep context.CancelFunc
	sweepDone chan struct{}
}

const (
	// trapSweepInterval is how often the trap sweep runs, so how long
	// the socket of a deleted SNMP target may outlive it.
	trapSweepInterval = time.Minute
	// trapIdleTTL is how long a trap sender may stay unused before the
	// sweep closes it: a socket is cheap to open again (UDP, no
	// handshake), and a target that sends nothing any more (disabled,
	// or whose lease another replica holds) must not keep one.
	trapIdleTTL = 10 * time.Minute
)

// New builds the service; Start starts working jobs.
func New(cfg Config) (*Service, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "delivery"), hooks: newWebhookSink(), traps: newTrapSink()}
	s.metrics = newMetrics(cfg.Store)
	if cfg.Registry != nil {
		if err := s.metrics.register(cfg.Registry); err != nil {
			return nil, err
		}
	}
	if cfg.Pool == nil {
		return s, nil // one-shots only (tests)
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &worker{s: s}); err != nil {
		return nil, err
	}
	rc, err := river.NewClient(riverpgxv5.New(cfg.Pool), &river.Config{
		Queues:               map[string]river.QueueConfig{backstop.DeliveryQueue: {MaxWorkers: cfg.Workers}},
		Workers:              workers,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.JobTimeout + time.Minute,
		FetchCooldown:        min(20*time.Millisecond, cfg.PollInterval),
		FetchPollInterval:    cfg.PollInterval,
		RetryPolicy:          internalRetry{},
		// River logs each job error at error level; our worker reports
		// delivery failures itself, so keep River to real trouble.
		Logger:       slog.New(slog.NewTextHandler(discardWriter{}, nil)),
		ErrorHandler: &errorHandler{log: s.log},
	})
	if err != nil {
		return nil, fmt.Errorf("notify: job queue: %w", err)
	}
	s.river = rc
	return s, nil
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// errorHandler logs a job that failed inside (a database error, say);
// River retries it.
type errorHandler struct{ log *slog.Logger }

func (h *errorHandler) HandleError(ctx context.Context, job *rivertype.JobRow, err error) *river.ErrorHandlerResult {
	h.log.WarnContext(ctx, "delivery job failed; retrying", "job_id", job.ID, "attempt", job.Attempt, "err", err)
	return nil
}

func (h *errorHandler) HandlePanic(ctx context.Context, job *rivertype.JobRow, v any, trace string) *river.ErrorHandlerResult {
	h.log.ErrorContext(ctx, "delivery job panicked", "job_id", job.ID, "panic", v, "trace", trace)
	return nil
}

// internalRetry schedules River's own retries of a job whose worker
// failed (not a receiver's failure, which is a snooze): soon, but not in
// a tight loop.
type internalRetry struct{}

func (internalRetry) NextRetry(job *rivertype.JobRow) time.Time {
	n := max(len(job.Errors), 1)
	return time.Now().Add(min(time.Duration(n*n)*time.Second, time.Minute))
}

// Start works delivery jobs, and sweeps the trap senders of deleted or
// idle SNMP targets, until Stop.
func (s *Service) Start(ctx context.Context) error {
	if s.river != nil {
		if err := s.river.Start(ctx); err != nil {
			return err
		}
	}
	ctx, s.stopSweep = context.WithCancel(ctx)
	s.sweepDone = make(chan struct{})
	go s.sweepLoop(ctx)
	return nil
}

// sweepLoop runs sweepTraps every trapSweepInterval and Prune every
// PruneInterval (and once at start) until ctx ends.
func (s *Service) sweepLoop(ctx context.Context) {
	defer close(s.sweepDone)
	tick := time.NewTicker(trapSweepInterval)
	defer tick.Stop()
	prune := time.NewTicker(s.cfg.PruneInterval)
	defer prune.Stop()
	s.pruneLogged(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			s.pruneLogged(ctx)
		case now := <-tick.C:
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.sweepTraps(sctx, now)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "sweep SNMP trap senders", "err", err)
			}
		}
	}
}

// maxPruneBatches bounds the work of one Prune; a larger backlog (the
// first prune after an upgrade, say) is worked off over the next runs.
const maxPruneBatches = 50

// Prune deletes the finished deliveries older than the retention, with
// their attempts, in batches of PruneBatch (at most maxPruneBatches of
// them), and returns how many it deleted. It keeps the delivery log,
// which every event adds to per target, from growing without bound.
func (s *Service) Prune(ctx context.Context) (int64, error) {
	var total int64
	before := time.Now().Add(-s.cfg.Retention)
	for range maxPruneBatches {
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := s.cfg.Store.PruneDeliveries(bctx, before, s.cfg.PruneBatch)
		cancel()
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(s.cfg.PruneBatch) {
			break
		}
	}
	s.metrics.pruned.Add(float64(total))
	return total, nil
}

// pruneLogged runs Prune and logs what it did.
func (s *Service) pruneLogged(ctx context.Context) {
	n, err := s.Prune(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.WarnContext(ctx, "prune the delivery log", "err", err, "pruned", n)
	case n > 0:
		s.log.InfoContext(ctx, "pruned the delivery log", "pruned", n, "retention", s.cfg.Retention)
	}
}

// sweepTraps closes the cached trap sockets of SNMP targets that no longer
// exist (deleted, here or on another replica) and of those unused for
// trapIdleTTL before now. A changed target's socket is replaced at its
// next trap, or closed here once idle.
func (s *Service) sweepTraps(ctx context.Context, now time.Time) error {
	bs, err := s.cfg.Store.DeliveryBacklog(ctx)
	if err != nil {
		return err
	}
	live := make(map[string]bool, len(bs))
	for _, b := range bs {
		if b.Kind == backstop.TargetSNMP {
			live[b.TargetID] = true
		}
	}
	if n := s.traps.sweep(live, now.Add(-trapIdleTTL)); n > 0 {
		s.log.DebugContext(ctx, "closed SNMP trap senders", "count", n)
	}
	return nil
}

// Stop lets running deliveries end for a few seconds (within ctx), then
// cancels them: an attempt cut short is made again by the next worker
// (at least once). It closes the cached trap sockets.
func (s *Service) Stop(ctx context.Context) error {
	if s.stopSweep != nil {
		s.stopSweep()
		<-s.sweepDone
	}
	// After the deliveries in flight: drop waits for a send to end.
	defer s.traps.sweep(nil, time.Time{})
	if s.river == nil {
		return nil
	}
	soft, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := s.river.Stop(soft); err == nil {
		return nil
	}
	return s.river.StopAndCancel(ctx)
}

// Seal seals a target's secret.
func (s *Service) Seal(targetID string, plain []byte) []byte {
	return s.cfg.Sealer.Seal(targetID, plain)
}

// Open unseals a target's secret.
func (s *Service) Open(targetID string, sealed []byte) ([]byte, error) {
	return s.cfg.Sealer.Open(targetID, sealed)
}

// backoff is the wait after the n-th failed attempt: BackoffBase doubled
// n-1 times, capped at BackoffMax, of which the second half is random
// ("equal jitter"), so receivers coming back are not hit by every
// sender at once.
func (s *Service) backoff(n int) time.Duration {
	d := s.cfg.BackoffBase
	for i := 1; i < n && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	return d/2 + randDuration(d/2)
}

func randDuration(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(max)))
	return time.Duration(n.Int64())
}

// worker is the River worker of delivery jobs.
type worker struct {
	river.WorkerDefaults[backstop.DeliveryJob]
	s *Service
}

// Work makes the job's delivery, draining its target's backlog in order
// while it holds the target's lease. It returns nil once the delivery is
// no longer pending, and otherwise snoozes until it may be due.
func (w *worker) Work(ctx context.Context, job *river.Job[backstop.DeliveryJob]) error {
	s := w.s
	d, t, err := s.cfg.Store.LoadDelivery(ctx, job.Args.DeliveryID)
	if errors.Is(err, backstop.ErrNotFound) {
		return nil // its target was deleted
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.cfg.JobTimeout - s.cfg.AttemptTimeout - 5*time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl.Add(-s.cfg.AttemptTimeout - 5*time.Second)
	}
	owner := uuid.NewString()
	for d.Status == backstop.DeliveryPending {
		ok, err := s.cfg.Store.ClaimTarget(ctx, t.ID, owner, s.cfg.leaseTTL())
		if err != nil {
			return err
		}
		if !ok {
			// Another worker drains this target and will most likely
			// make this delivery too; look again a little later.
			return river.JobSnooze(time.Second + randDuration(time.Second))
		}
		wait, err := s.drain(ctx, t.ID, owner, deadline)
		// Release with a context of its own: a cancelled job must still
		// let the next worker in before the lease expires.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = s.cfg.Store.ReleaseTarget(rctx, t.ID, owner)
		cancel()
		if ctx.Err() != nil {
			return river.JobSnooze(0) // stopping: carry on at the next start
		}
		if err != nil {
			return err
		}
		if d, _, err = s.cfg.Store.LoadDelivery(ctx, job.Args.DeliveryID); errors.Is(err, backstop.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		switch {
		case d.Status != backstop.DeliveryPending:
			// Done; but a delivery queued while this worker held the
			// lease may have snoozed on it: drain once more if so.
			if h, _, ok, err := s.cfg.Store.HeadDelivery(ctx, t.ID); err == nil && ok && !h.NextAttemptAt.After(time.Now()) && time.Now().Before(deadline) {
				d.Status = backstop.DeliveryPending // loop once more, for the others
				continue
			}
			return nil
		case wait > 0:
			// The target's head waits for its next attempt (this one,
			// or an earlier delivery that holds this one back).
			return river.JobSnooze(wait + randDuration(100*time.Millisecond))
		case !time.Now().Before(deadline):
			return river.JobSnooze(0) // out of time; carry on in a new run
		}
	}
	return nil
}

// drain makes the target's due deliveries in order while it holds the
// lease. It returns how long until the head's next attempt when the head
// is waiting for a retry, and 0 when nothing is pending, the lease was
// lost or time ran out.
func (s *Service) drain(ctx context.Context, targetID, owner string, deadline time.Time) (time.Duration, error) {
	renewed := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		d, t, ok, err := s.cfg.Store.HeadDelivery(ctx, targetID)
		if err != nil || !ok {
			return 0, err
		}
		if wait := time.Until(d.NextAttemptAt); wait > 0 {
			return wait, nil
		}
		// Renew the lease well before it could expire under an attempt;
		// a worker that lost it (it stalled past the lease) stops.
		if time.Since(renewed) > s.cfg.leaseTTL()-s.cfg.AttemptTimeout-5*time.Second {
			if ok, err := s.cfg.Store.ClaimTarget(ctx, targetID, owner, s.cfg.leaseTTL()); err != nil || !ok {
				return 0, err
			}
			renewed = time.Now()
		}
		if err := s.attempt(ctx, t, d); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// attempt makes one attempt of d and records it.
func (s *Service) attempt(ctx context.Context, t backstop.Target, d backstop.Delivery) error {
	r, retryAfter := s.send(ctx, t, d)
	n := d.Attempts + 1
	outcome, next := backstop.OutcomeDelivered, time.Time{}
	switch {
	case r.Err == nil:
	case r.Retryable && n < s.cfg.MaxAttempts:
		outcome = backstop.OutcomeRetry
		next = time.Now().Add(min(max(s.backoff(n), retryAfter), s.cfg.BackoffMax))
	case r.Retryable:
		outcome = backstop.OutcomeFailed
		r.Err = fmt.Errorf("retry budget of %d attempts spent; last: %w", s.cfg.MaxAttempts, r.Err)
	default:
		outcome = backstop.OutcomeFailed
	}
	// Record even when the job's context is ending: the attempt was made.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	status, err := s.cfg.Store.RecordAttempt(rctx, t, d, r, outcome, next)
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	s.metrics.attempt(t, outcome, status, d)
	log := s.log.With("target_kind", t.Kind, "target_id", t.ID, "delivery_id", d.ID, "event_type", d.EventType, "attempt", n)
	switch outcome {
	case backstop.OutcomeRetry:
		log.InfoContext(ctx, "delivery failed; will retry", "err", r.Err, "next_attempt_at", next)
	case backstop.OutcomeFailed:
		log.WarnContext(ctx, "delivery dead-lettered", "err", r.Err)
	}
	return nil
}

// send makes one try at the target.
func (s *Service) send(ctx context.Context, t backstop.Target, d backstop.Delivery) (backstop.AttemptResult, time.Duration) {
	secret, err := s.cfg.Sealer.Open(t.ID, t.Secret)
	if err != nil {
		return backstop.AttemptResult{Err: err}, 0
	}
	switch t.Kind {
	case backstop.TargetWebhook:
		body, err := webhookBody(d.EventType, eventTime(d.Payload), d.Payload)
		if err != nil {
			return backstop.AttemptResult{Err: err}, 0
		}
		secrets, err := backstop.ParseWebhookSecrets(secret)
		if err != nil {
			return backstop.AttemptResult{Err: err}, 0
		}
		return s.hooks.deliver(ctx, t.Webhook.URL, secrets.Signing(time.Now()), d.EventID, body, s.cfg.AttemptTimeout)
	case backstop.TargetSNMP:
		var sec backstop.SNMPSecrets
		if err := json.Unmarshal(secret, &sec); err != nil {
			return backstop.AttemptResult{Err: fmt.Errorf("SNMP secrets: %w", err)}, 0
		}
		vars, oid, err := trapVarbinds(d.Payload)
		if err != nil {
			return backstop.AttemptResult{Err: err}, 0
		}
		if d.Kind == backstop.DeliveryTest {
			oid = oidNotifications + fmt.Sprintf(".%d", backstop.TestTrap)
		}
		engine, err := s.cfg.Store.SNMPEngine(ctx)
		if err != nil {
			return backstop.AttemptResult{Err: fmt.Errorf("SNMP engine: %w", err), Retryable: true}, 0
		}
		return s.traps.send(t, sec, engine, oid, vars, s.cfg.AttemptTimeout), 0
	}
	return backstop.AttemptResult{Err: fmt.Errorf("unknown target kind %q", t.Kind)}, 0
}

// Ping sends a signed webhook.ping to a webhook now, once, and records it.
func (s *Service) Ping(ctx context.Context, t backstop.Target) (backstop.Delivery, error) {
	now := time.Now().UTC()
	data, _ := json.Marshal(map[string]any{"webhook_id": t.ID, "message": "ping from backstopd", "at": now.Format(time.RFC3339Nano)})
	d := backstop.Delivery{Kind: backstop.DeliveryPing, EventID: uuid.NewString(), EventType: "webhook.ping", Payload: data}
	r, _ := s.send(ctx, t, d)
	s.metrics.attempt(t, map[bool]string{true: backstop.OutcomeDelivered, false: backstop.OutcomeFailed}[r.Err == nil], "", d)
	return s.cfg.Store.RecordOneShot(context.WithoutCancel(ctx), t.ID, d.Kind, d.EventID, d.EventType, data, r)
}

// TestTrap sends a backstopTestNotification to an SNMP target now, once,
// and records it.
func (s *Service) TestTrap(ctx context.Context, t backstop.Target) (backstop.Delivery, error) {
	now := time.Now().UTC()
	id := uuid.NewString()
	data, _ := json.Marshal(map[string]any{"seq": 0, "id": id, "type": "snmp.test", "severity": backstop.SeverityInfo,
		"message": "test trap from backstopd", "subject": map[string]string{"target_id": t.ID}, "details": map[string]any{}, "at": now.Format(time.RFC3339Nano)})
	d := backstop.Delivery{Kind: backstop.DeliveryTest, EventID: id, EventType: "snmp.test", Payload: data}
	r, _ := s.send(ctx, t, d)
	s.metrics.attempt(t, map[bool]string{true: backstop.OutcomeDelivered, false: backstop.OutcomeFailed}[r.Err == nil], "", d)
	return s.cfg.Store.RecordOneShot(context.WithoutCancel(ctx), t.ID, d.Kind, d.EventID, d.EventType, data, r)
}
