// Package leader elects one leader among backstopd replicas through
// PostgreSQL: an advisory lock held on a dedicated connection, and a term
// incremented in the database each time leadership changes hands. Only the
// leader detects failures, decides and signs automatic commands; commands
// carry the term, and agents refuse terms older than one they have seen.
package leader

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Session is held leadership (store.LeaderSession implements it).
type Session interface {
	Check(ctx context.Context) error
	Release()
}

// Store is what the elector needs.
type Store interface {
	// TryLead returns a session and its term, or a nil session when
	// another replica leads.
	TryLead(ctx context.Context, replicaID string) (Session, int64, error)
	TouchReplica(ctx context.Context, id, address, version string) error
	RemoveReplica(ctx context.Context, id string) error
}

// TermSession is a store's own session type: held leadership and its
// term. The constraint is comparable so that its zero value (nil) means
// "another replica leads".
type TermSession interface {
	comparable
	Session
	LeaderTerm() int64
}

// StoreOf is a store whose TryLead returns its own session type, the zero
// value when another replica leads (*store.Store).
type StoreOf[S TermSession] interface {
	TryLead(ctx context.Context, replicaID string) (S, error)
	TouchReplica(ctx context.Context, id, address, version string) error
	RemoveReplica(ctx context.Context, id string) error
}

// FromStore adapts such a store to Store: the one adapter between the
// store's concrete session and the elector's interface (Go has no
// covariant results, and the store must not import this package).
func FromStore[S TermSession](st StoreOf[S]) Store { return storeAdapter[S]{st} }

type storeAdapter[S TermSession] struct{ StoreOf[S] }

func (a storeAdapter[S]) TryLead(ctx context.Context, replicaID string) (Session, int64, error) {
	s, err := a.StoreOf.TryLead(ctx, replicaID)
	var none S
	if err != nil || s == none {
		return nil, 0, err
	}
	return s, s.LeaderTerm(), nil
}

// Config configures an Elector.
type Config struct {
	Store     Store
	ReplicaID string
	Address   string
	Version   string
	Logger    *slog.Logger
	// Interval between attempts to lead and between checks of a held
	// session; default 500 ms.
	Interval time.Duration
	// Lead runs while this replica leads, with a context cancelled the
	// moment leadership is lost; it must return promptly then.
	Lead func(ctx context.Context, term int64)
}

// Elector campaigns for leadership and runs Lead while it holds it.
type Elector struct {
	cfg Config

	// mu guards term.
	mu   sync.Mutex
	term int64 // 0 when not leading
}

// New returns an elector.
func New(cfg Config) *Elector {
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "leader", "replica", cfg.ReplicaID)
	return &Elector{cfg: cfg}
}

// Term returns the term this replica leads in, or 0.
func (e *Elector) Term() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

func (e *Elector) setTerm(t int64) {
	e.mu.Lock()
	e.term = t
	e.mu.Unlock()
}

// Run campaigns until ctx ends.
func (e *Elector) Run(ctx context.Context) {
	log := e.cfg.Logger
	defer func() {
		// Cleanup with a fresh context: ctx is already done.
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = e.cfg.Store.RemoveReplica(c, e.cfg.ReplicaID)
	}()
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if err := e.cfg.Store.TouchReplica(ctx, e.cfg.ReplicaID, e.cfg.Address, e.cfg.Version); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "record replica", "err", err)
		}
		s, term, err := e.cfg.Store.TryLead(ctx, e.cfg.ReplicaID)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "campaign", "err", err)
		}
		if s != nil {
			e.lead(ctx, s, term, t)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead holds leadership until the session fails or ctx ends.
func (e *Elector) lead(ctx context.Context, s Session, term int64, t *time.Ticker) {
	log := e.cfg.Logger
	log.InfoContext(ctx, "became leader", "term", term)
	e.setTerm(term)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if e.cfg.Lead != nil {
			e.cfg.Lead(lctx, term)
		}
	}()
	defer func() {
		e.setTerm(0)
		cancel()
		<-done
		s.Release()
	}()
	for {
		select {
		case <-ctx.Done():
			log.InfoContext(ctx, "giving up leadership: stopping", "term", term)
			return
		case <-t.C:
		}
		if err := s.Check(ctx); err != nil {
			log.ErrorContext(ctx, "lost leadership: the lock's session failed", "term", term, "err", err)
			return
		}
		if err := e.cfg.Store.TouchReplica(ctx, e.cfg.ReplicaID, e.cfg.Address, e.cfg.Version); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "record replica", "err", err)
		}
	}
}
