package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// Never two copies, and no outage left behind: a failover's bring-up that
// the target gave up because it fenced itself (its lease lapsed once,
// under load) or was isolated leaves the hierarchy failed with no node and
// no failed mark, so the engine places it again (on that node too) once a
// node can take it. Any other failure keeps today's rule: a failed mark on
// the node, lifted only by an operator. Nothing of the hierarchy runs on
// the target in either case (the agent fenced or never started it), and
// the node it left was down before the command was issued.
func TestFencedBringUpLeavesNoFailedMark(t *testing.T) {
	for _, tc := range []struct {
		reason   string
		unplaced bool
	}{
		{backstop.FailedFenced, true},
		{backstop.FailedIsolated, true},
		{"", false},
	} {
		t.Run(fmt.Sprintf("reason=%q", tc.reason), func(t *testing.T) {
			e := newJudgeEnv(t, 2)
			h := e.placeOnFirst()
			e.silenceFirst()
			e.judge()
			e.wantStates("down", "up")
			if _, _, err := e.st.StartMove(t.Context(), e.term, backstop.MoveRequest{Kind: backstop.MoveFailover, ClusterID: e.c.ID, HierarchyID: h.ID,
				ExpectEpoch: -1, To: e.nodes[1].ID, DetectedAt: time.Now(), Decision: backstop.DecisionRecord{ClusterID: e.c.ID, HierarchyID: h.ID,
					Kind: "failover", From: e.nodes[0].ID, To: e.nodes[1].ID, Reason: "test", Key: "k"}}, fakeSign); err != nil {
				t.Fatal(err)
			}
			var cmdID string
			if err := e.st.Pool().QueryRow(t.Context(), `SELECT id FROM commands WHERE hierarchy_id = $1 AND node_id = $2 AND action = 'bring_in_service'`,
				h.ID, e.nodes[1].ID).Scan(&cmdID); err != nil {
				t.Fatal(err)
			}
			a := backstop.AgentIdentity{NodeID: e.nodes[1].ID, ClusterID: e.c.ID, NodeName: e.nodes[1].Name}
			if _, err := e.st.RecordCommandResult(t.Context(), a, cmdID, backstop.CommandOutcome{Status: backstop.CommandFailed, Reason: tc.reason,
				Detail: "the node fenced itself while the command ran"}, fakeSign); err != nil {
				t.Fatal(err)
			}
			if _, err := e.st.ClusterStatuses(t.Context(), nil); err != nil { // turns failed placements on up nodes into marks
				t.Fatal(err)
			}
			st, err := e.st.ClusterStatus(t.Context(), e.c.ID)
			if err != nil {
				t.Fatal(err)
			}
			p := st.Hierarchies[0].Placement
			marks := st.Hierarchies[0].FailedOn
			if tc.unplaced {
				if p.NodeID != "" || p.State != backstop.PlacementFailed || len(marks) != 0 {
					t.Fatalf("placement %+v, marks %v: want failed with no node and no mark", p, marks)
				}
			} else if p.NodeID != e.nodes[1].ID || p.State != backstop.PlacementFailed || marks[e.nodes[1].ID] == "" {
				t.Fatalf("placement %+v, marks %v: want failed on n2 with a mark", p, marks)
			}
		})
	}
}

// A move's bring-up is issued once, by whichever gets there first: the
// stop's result (RecordCommandResult, with a signer) issues it in the
// same transaction, and AdvanceMoves then finds nothing; without a signer
// AdvanceMoves issues it. Invariant "never two copies": the target gets
// its bring-up only after the old node confirmed the stop, exactly once,
// at the next epoch; a stop that failed brings nothing up, and a stale
// stop result (the hierarchy's epoch moved on since its command) neither
// stops nor advances anything.
func TestStopResultAdvancesTheMove(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sign   backstop.Signer
		status string
		stale  bool
	}{
		{"signed result", fakeSign, backstop.CommandSucceeded, false},
		{"no signer: AdvanceMoves", nil, backstop.CommandSucceeded, false},
		{"stop failed", fakeSign, backstop.CommandFailed, false},
		{"stale result", fakeSign, backstop.CommandSucceeded, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newJudgeEnv(t, 2)
			for i := range 2 {
				e.set(i, "up", "-10 ms", "10 s", nil)
			}
			h := e.placeOnFirst()
			if _, op, err := e.st.StartMove(t.Context(), 0, backstop.MoveRequest{Kind: backstop.MoveSwitchover, ClusterID: e.c.ID, HierarchyID: h.ID,
				ExpectEpoch: 1, To: e.nodes[1].ID, DetectedAt: time.Now(), WithOperation: true, Decision: backstop.DecisionRecord{ClusterID: e.c.ID, HierarchyID: h.ID,
					Kind: "switchover", From: e.nodes[0].ID, To: e.nodes[1].ID, Reason: "test", Key: "k"}}, fakeSign); err != nil || op == nil {
				t.Fatalf("StartMove: %v, operation %v", err, op)
			}
			bringUps := func() (n int, epoch, term int64) {
				t.Helper()
				if err := e.st.Pool().QueryRow(t.Context(), `SELECT count(*), coalesce(max(epoch), 0), coalesce(max(term), 0) FROM commands
					WHERE hierarchy_id = $1 AND node_id = $2 AND action = 'bring_in_service'`, h.ID, e.nodes[1].ID).Scan(&n, &epoch, &term); err != nil {
					t.Fatal(err)
				}
				return n, epoch, term
			}
			var stopID string
			if err := e.st.Pool().QueryRow(t.Context(), `SELECT id FROM commands WHERE hierarchy_id = $1 AND node_id = $2 AND action = 'take_out_of_service'`,
				h.ID, e.nodes[0].ID).Scan(&stopID); err != nil {
				t.Fatal(err)
			}
			if n, _, _ := bringUps(); n != 0 {
				t.Fatalf("%d bring-ups on the target before the old node stopped", n)
			}
			if tc.stale {
				e.exec(`UPDATE hierarchies SET epoch = epoch + 1 WHERE id = $1`, h.ID)
			}
			a := backstop.AgentIdentity{NodeID: e.nodes[0].ID, ClusterID: e.c.ID, NodeName: e.nodes[0].Name}
			if _, err := e.st.RecordCommandResult(t.Context(), a, stopID, backstop.CommandOutcome{Status: tc.status, Detail: "done"}, tc.sign); err != nil {
				t.Fatal(err)
			}
			n, epoch, term := bringUps()
			switch {
			case tc.stale:
				if n != 0 {
					t.Fatalf("a stale stop result issued %d bring-ups", n)
				}
				if advanced, err := e.st.AdvanceMoves(t.Context(), e.term, fakeSign); err != nil || advanced != 0 {
					t.Fatalf("AdvanceMoves after a stale stop result: %d, %v; want nothing (the stop is not confirmed)", advanced, err)
				}
				return
			case tc.status != backstop.CommandSucceeded:
				if n != 0 {
					t.Fatalf("a failed stop issued %d bring-ups", n)
				}
			case tc.sign != nil:
				if n != 1 || epoch != 3 || term != e.term {
					t.Fatalf("after the stop's result: %d bring-ups (epoch %d, term %d), want 1 at epoch 3, term %d", n, epoch, term, e.term)
				}
			default:
				if n != 0 {
					t.Fatalf("a result without a signer issued %d bring-ups", n)
				}
			}
			advanced, err := e.st.AdvanceMoves(t.Context(), e.term, fakeSign)
			if err != nil {
				t.Fatal(err)
			}
			wantAdvanced := 1
			if tc.sign != nil && tc.status == backstop.CommandSucceeded {
				wantAdvanced = 0
			}
			if advanced != wantAdvanced {
				t.Fatalf("AdvanceMoves after the result: %d, want %d", advanced, wantAdvanced)
			}
			n, epoch, _ = bringUps()
			wantN := 1
			if tc.status != backstop.CommandSucceeded {
				wantN = 0
			}
			if n != wantN || (n == 1 && epoch != 3) {
				t.Fatalf("bring-ups in the end: %d (epoch %d), want %d at epoch 3", n, epoch, wantN)
			}
			var moving bool
			if err := e.st.Pool().QueryRow(t.Context(), `SELECT move_to IS NOT NULL FROM hierarchies WHERE id = $1`, h.ID).Scan(&moving); err != nil || moving {
				t.Fatalf("move still recorded: %v, %v", moving, err)
			}
		})
	}
}
