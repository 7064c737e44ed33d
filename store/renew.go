package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/google/uuid"
)

// RenewLease is the heartbeat of an agent whose report says nothing new:
// no transaction of its own, no report written. It renews the lease
// exactly as RecordHeartbeat would (TTL plus grace from the database's
// now) and answers ok, but only when RecordHeartbeat would have done
// nothing else: the node is up (so a node declared down still gets its
// lease refused by RecordHeartbeat), holds no restart hold, has no
// incident waiting for its first passing deep check, and its stored
// report has the renewal's digest (or, for a renewal carrying a report to
// store, the previous digest r.Prev: then the report and its digest are
// stored too, which keeps a steady node's telemetry fresh without a
// transaction of its own). Otherwise it changes nothing and answers ok false,
// and the caller must call RecordHeartbeat. A report with failed
// hierarchies, fences or a restart hold must never come here (the
// caller checks; see server.AgentHeartbeat).
//
// Leaving the stored report as it was loses only telemetry (round-trip
// times, losses, check times): the digest covers everything the failure
// detector, the engine and reportChangesTx read, and the deep check times
// the incident timeline reads are stored while an incident waits for
// them.
//
// Renewals are committed in groups (group commit): the renewals that
// arrive while earlier ones are being written go to PostgreSQL together,
// as one UPDATE over all their nodes. An idle control plane writes each
// at once, alone; a busy one writes one statement, one commit and one
// WAL flush for many heartbeats instead of one each. A renewal's answer
// comes only after its group committed, so no lease is promised that the
// database does not hold. The group's statement never waits for a row
// lock (SKIP LOCKED): a node whose row another transaction holds (the
// failure detector judging it, a placement) is answered ok false and
// takes RecordHeartbeat, which waits for the lock and then sees what
// that transaction decided, as a lone heartbeat always did.
func (s *Store) RenewLease(ctx context.Context, a backstop.AgentIdentity, lr backstop.LeaseRenewal) (backstop.HeartbeatAck, bool, error) {
	if len(lr.Digest) == 0 {
		return backstop.HeartbeatAck{}, false, nil
	}
	r := &renewal{nodeID: a.NodeID, digest: lr.Digest, done: make(chan struct{})}
	if lr.Report != nil && len(lr.Prev) > 0 {
		r.prev, r.report = lr.Prev, string(lr.Report)
	}
	s.renew.submit(s, r)
	select {
	case <-r.done:
		return r.ack, r.ok, r.err
	case <-ctx.Done():
		// The group still commits (its lease only ends later than the
		// agent's own deadline, which is safe); this caller just stops
		// waiting for it.
		return backstop.HeartbeatAck{}, false, ctx.Err()
	}
}

// Group commit limits: at most renewInFlight groups are written at once
// (PostgreSQL gets one core's worth of lease writes at most, the rest of
// its capacity stays with the full heartbeats, placements and the API),
// and a group holds at most renewMaxGroup renewals.
const (
	renewInFlight = 2
	renewMaxGroup = 512
	// renewTimeout bounds one group's statement: a stuck database fails
	// the group's heartbeats instead of holding them.
	renewTimeout = 10 * time.Second
)

// renewal is one RenewLease waiting for its group.
type renewal struct {
	nodeID string
	digest []byte
	// prev and report: see backstop.LeaseRenewal (nil and "": none).
	prev   []byte
	report string
	// Set before done is closed.
	ack  backstop.HeartbeatAck
	ok   bool
	err  error
	done chan struct{}
}

// renewBatcher groups renewals. The zero value is ready. The caller that
// finds a free in-flight slot writes the waiting renewals (its own among
// them) as one group; renewals that arrive meanwhile wait for the next
// group, written by a goroutine that inherits the slot, so no heartbeat's
// answer waits for groups after its own, nothing waits for a timer, and
// nothing runs when no heartbeat comes.
type renewBatcher struct {
	// mu guards pending and inFlight.
	mu       sync.Mutex
	pending  []*renewal
	inFlight int
}

func (b *renewBatcher) submit(s *Store, r *renewal) {
	b.mu.Lock()
	b.pending = append(b.pending, r)
	if b.inFlight >= renewInFlight {
		b.mu.Unlock() // a writer in flight takes it with its next group
		return
	}
	b.inFlight++
	b.mu.Unlock()
	b.drain(s)
}

// drain writes one group of the waiting renewals while holding an
// in-flight slot, then passes the slot on to a goroutine when more are
// waiting, or frees it.
func (b *renewBatcher) drain(s *Store) {
	b.mu.Lock()
	n := min(len(b.pending), renewMaxGroup)
	group := slices.Clone(b.pending[:n])
	b.pending = slices.Delete(b.pending, 0, n)
	b.mu.Unlock()
	if len(group) > 0 {
		s.renewGroup(group)
	}
	b.mu.Lock()
	more := len(b.pending) > 0
	if !more {
		b.inFlight--
	}
	b.mu.Unlock()
	if more {
		go b.drain(s)
	}
}

// renewGroup writes one group and answers each of its renewals.
func (s *Store) renewGroup(group []*renewal) {
	ctx, cancel := context.WithTimeout(context.Background(), renewTimeout)
	defer cancel()
	// A node may appear twice (an agent that retried while its first
	// heartbeat waited): its renewals with the same digest get the one
	// answer; with another digest at most one can match the stored report.
	// ids are passed as uuid.UUID: pgx encodes those as uuid[] in
	// binary, while for strings it first tried binary, failed (an error
	// allocated per group) and fell back to text.
	ids := make([]uuid.UUID, 0, len(group))
	digests := make([][]byte, 0, len(group))
	prevs := make([][]byte, 0, len(group))
	reports := make([]*string, 0, len(group))
	seen := make(map[string]bool, len(group))
	for _, r := range group {
		id, err := uuid.Parse(r.nodeID)
		if err != nil {
			r.err = fmt.Errorf("node %q: %w", r.nodeID, backstop.ErrNotFound)
			continue
		}
		if k := r.nodeID + string(r.digest); !seen[k] {
			seen[k] = true
			ids = append(ids, id)
			digests = append(digests, r.digest)
			prevs = append(prevs, r.prev)
			if r.prev != nil {
				reports = append(reports, &r.report)
			} else {
				reports = append(reports, nil)
			}
		}
	}
	type result struct {
		ttlMS         int64
		configVersion int64
		term          int64
	}
	renewed := make(map[string]result, len(ids))
	// l locks, in one order, the rows of the group's nodes that nothing
	// else holds and that are still up, without a hold and with the
	// digest; the UPDATE checks it all again on the row it locked.
	rows, err := s.pool.Query(ctx, `WITH b AS (SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::text[]) AS b(id, digest, prev, report)),
		l AS (SELECT n.id, b.digest, b.prev, b.report FROM nodes n JOIN b ON n.id = b.id
			WHERE n.state = 'up' AND n.hold_instance IS NULL AND (n.report_digest = b.digest OR n.report_digest = b.prev)
			ORDER BY n.id FOR UPDATE OF n SKIP LOCKED)
		UPDATE nodes n SET last_heartbeat_at = now(),
			lease_expires_at = now() + make_interval(secs => ((c.timing->>'lease_ttl_ms')::int + (c.timing->>'server_grace_ms')::int) / 1000.0),
			report = CASE WHEN n.report_digest = l.digest THEN n.report ELSE l.report::jsonb END,
			report_digest = l.digest
		FROM l, clusters c
		WHERE n.id = l.id AND c.id = n.cluster_id AND n.state = 'up' AND n.hold_instance IS NULL
		AND (n.report_digest = l.digest OR (n.report_digest = l.prev AND l.report IS NOT NULL))
		AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.to_node = n.id AND i.started_at IS NOT NULL AND i.first_deep_check_at IS NULL)
		RETURNING n.id::text, l.digest, (c.timing->>'lease_ttl_ms')::bigint, c.config_version, (SELECT term FROM control_plane WHERE id = 1)`,
		ids, digests, prevs, reports)
	if err == nil {
		for rows.Next() {
			var id string
			var digest []byte
			var res result
			if err = rows.Scan(&id, &digest, &res.ttlMS, &res.configVersion, &res.term); err != nil {
				break
			}
			renewed[id+string(digest)] = res
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	for _, r := range group {
		if err != nil {
			r.err = fmt.Errorf("node %s: renew lease: %w", r.nodeID, interpretError(err))
		} else if res, ok := renewed[r.nodeID+string(r.digest)]; ok {
			r.ok = true
			r.ack = backstop.HeartbeatAck{LeaseTTL: time.Duration(res.ttlMS) * time.Millisecond, Term: res.term, ConfigVersion: res.configVersion}
		}
		close(r.done)
	}
}
