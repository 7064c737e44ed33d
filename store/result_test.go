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
				Detail: "the node fenced itself while the command ran"}); err != nil {
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
