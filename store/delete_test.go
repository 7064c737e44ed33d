package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/store"
)

// TestDeleteClusterWhileAgentsHeartbeat: deleting a cluster whose agents
// are still heartbeating, while the failure detector judges its lapsing
// nodes, neither fails nor deadlocks. Seen after a collapsed load run:
// DELETE /v1/clusters/{id} answered 500 "deadlock detected", because the
// delete locked the cluster row and then, cascading, each node row,
// while a heartbeat (node row, then the cluster row for its node.up or
// path event) and the failure detector (node rows, then the cluster row
// for its node.unreachable event) take them in the opposite order.
//
// The test counts the transactions PostgreSQL aborted to break a
// deadlock (withTx runs them again): there must be none, so the lock
// order holds by itself and the retry stays a backstop.
func TestDeleteClusterWhileAgentsHeartbeat(t *testing.T) {
	e := newJudgeEnv(t, 1) // only for its leader and term
	st, ctx := e.st, t.Context()
	const rounds, nodes = 6, 12
	for round := range rounds {
		c := newCluster(t, st, fmt.Sprintf("doomed-%d", round))
		var ns []backstop.Node
		for i := range nodes {
			ns = append(ns, newNode(t, st, c, fmt.Sprintf("n%d", i)))
		}
		agent := func(i int) backstop.AgentIdentity {
			return backstop.AgentIdentity{NodeID: ns[i].ID, ClusterID: c.ID, NodeName: ns[i].Name}
		}
		// report i says every path to a peer is up or (odd beats) that
		// the path to its neighbour is down: every other heartbeat writes
		// a path event, as agents do when paths flap under load.
		report := func(i, beat int) []byte {
			s := `{"config_version": 1, "paths": [`
			for j := range ns {
				if j == i {
					continue
				}
				state := "up"
				if beat%2 == 1 && j == (i+1)%nodes {
					state = "down"
				}
				if s[len(s)-1] != '[' {
					s += ","
				}
				s += fmt.Sprintf(`{"path_id": "0195f7a4-2222-7000-8000-%012d", "peer_node_id": %q, "state": %q}`, i*100+j, ns[j].ID, state)
			}
			return []byte(s + "]}")
		}
		stop := make(chan struct{})
		errs := make(chan error, nodes+2)
		var wg sync.WaitGroup
		// A node deleted under its agent is gone; a full heartbeat that
		// waited longer than it may for a lock (the delete holds the
		// node rows) gives up with 503 busy and the agent sends its
		// next: both are what agents see, neither is a deadlock (which
		// the retry count below would show).
		gone := func(err error) bool {
			var pgErr *pgconn.PgError
			return errors.Is(err, backstop.ErrNotFound) || (errors.As(err, &pgErr) && pgErr.Code == "55P03")
		}
		for i := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for beat := 0; ; beat++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					if beat%3 == 2 {
						// The fast path: a grouped UPDATE, outside withTx (no retry).
						_, _, err = st.RenewLease(ctx, agent(i), backstop.LeaseRenewal{Digest: []byte("digest-0123456789abcdef0123456789")})
					} else {
						_, err = st.RecordHeartbeat(ctx, agent(i), backstop.AgentReport{ConfigVersion: 1, Raw: report(i, beat)})
					}
					if err != nil && !gone(err) {
						errs <- fmt.Errorf("heartbeat of n%d: %w", i, err)
						return
					}
				}
			}()
		}
		// The failure detector, with leases lapsing under it: the peers'
		// reports see the lapsed nodes, so they go unreachable (an event
		// under the cluster's row lock) and the next heartbeat brings them
		// back up (another).
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				// One node per statement: a statement locking several
				// rows in no order would deadlock with anything, and no
				// real writer does that.
				for _, i := range []int{k % nodes, (k + 5) % nodes} {
					if _, err := st.Pool().Exec(ctx, `UPDATE nodes SET lease_expires_at = now() - interval '50 ms', last_heartbeat_at = now() - interval '1300 ms'
						WHERE id = $1 AND state = 'up'`, ns[i].ID); err != nil && !gone(err) {
						errs <- err
						return
					}
				}
				if _, err := st.JudgeNodes(ctx, e.term); err != nil {
					errs <- fmt.Errorf("JudgeNodes: %w", err)
					return
				}
			}
		}()
		// Delete once the cluster is busy: every node has heartbeated and
		// the detector has written events.
		testkit.Eventually(t, 0, "every node heartbeating and a node judged unreachable", func() bool {
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			var up, judged int
			if err := st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM nodes WHERE cluster_id = $1 AND state <> 'pending'),
				(SELECT count(*) FROM events WHERE cluster_id = $1 AND type = 'node.unreachable')`, c.ID).Scan(&up, &judged); err != nil {
				t.Fatal(err)
			}
			return up == nodes && judged > 0
		})
		delErr := st.DeleteCluster(actorCtx(t), c.ID, nil)
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if delErr != nil {
			t.Fatalf("round %d: DeleteCluster while agents heartbeat: %v", round, delErr)
		}
		if _, err := st.FindClusterByID(ctx, c.ID); !errors.Is(err, backstop.ErrNotFound) {
			t.Fatalf("round %d: the cluster is still there: %v", round, err)
		}
	}
	if n := store.TxRetries(st); n != 0 {
		t.Fatalf("%d transactions were aborted to break a deadlock and run again; the delete's lock order must avoid them", n)
	}
}
