package failover

import (
	"fmt"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
)

func node(id string, state backstop.NodeState) NodeView {
	return NodeView{ID: id, Name: id, State: state, PathsAlive: state == backstop.NodeUp}
}

func hier(id, group, on string, state backstop.PlacementState, prios ...string) HierarchyView {
	h := HierarchyView{ID: id, Name: id, Group: group, Switchback: backstop.SwitchbackIntelligent, FailedOn: map[string]bool{},
		Placement: backstop.Placement{NodeID: on, State: state, Epoch: 1}}
	for i, p := range prios {
		h.Priorities = append(h.Priorities, backstop.Priority{NodeID: p, Priority: i + 1})
	}
	return h
}

func nodes(vs ...NodeView) map[string]NodeView {
	m := map[string]NodeView{}
	for _, v := range vs {
		m[v.ID] = v
	}
	return m
}

func TestDecide(t *testing.T) {
	up, down, unreach := backstop.NodeUp, backstop.NodeDown, backstop.NodeUnreachable
	in := backstop.PlacementInService
	cases := []struct {
		name string
		snap Snapshot
		want []string // "hierarchy:kind:to" each
		why  string   // substring of the first decision's reason or a candidate's rejection
	}{
		{"all well", Snapshot{nodes(node("n1", up), node("n2", up)), []HierarchyView{hier("h", "", "n1", in, "n1", "n2")}}, nil, ""},
		{"primary down: priority 2", Snapshot{nodes(node("n1", down), node("n2", up), node("n3", up)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2", "n3")}}, []string{"h:failover:n2"}, "n1 is down"},
		{"down, awaiting its fence: nothing moves", Snapshot{nodes(NodeView{ID: "n1", Name: "n1", State: down, AwaitingFence: true}, node("n2", up)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2")}}, nil, ""},
		{"down, awaiting its fence, failed there: nothing moves", Snapshot{nodes(NodeView{ID: "n1", Name: "n1", State: down, AwaitingFence: true}, node("n2", up)),
			[]HierarchyView{hier("h", "", "n1", backstop.PlacementFailed, "n1", "n2")}}, nil, ""},
		{"down and fenced: moves", Snapshot{nodes(NodeView{ID: "n1", Name: "n1", State: down}, node("n2", up)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2")}}, []string{"h:failover:n2"}, "n1 is down"},
		{"unreachable: nothing moves", Snapshot{nodes(node("n1", unreach), node("n2", up)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2")}}, nil, ""},
		{"cascade to priority 3", Snapshot{nodes(node("n1", down), node("n2", down), node("n3", up)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2", "n3")}}, []string{"h:failover:n3"}, "node is down"},
		{"maintenance skipped", Snapshot{nodes(node("n1", down), NodeView{ID: "n2", Name: "n2", State: up, Maintenance: true}, node("n3", up)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2", "n3")}}, []string{"h:failover:n3"}, "in maintenance"},
		{"no candidate: failed", Snapshot{nodes(node("n1", down), node("n2", down)),
			[]HierarchyView{hier("h", "", "n1", in, "n1", "n2")}}, []string{"h:fail:"}, "no node can take it over"},
		{"local failure: next node", func() Snapshot {
			h := hier("h", "", "n1", backstop.PlacementFailed, "n1", "n2")
			h.FailedOn["n1"] = true
			return Snapshot{nodes(node("n1", up), node("n2", up)), []HierarchyView{h}}
		}(), []string{"h:failover:n2"}, "failed on node n1"},
		{"N+1: first takes the backup, second fails on exclusivity", Snapshot{
			nodes(node("p1", down), node("p2", down), node("p3", up), node("b", up)),
			[]HierarchyView{hier("h1", "x", "p1", in, "p1", "b"), hier("h2", "x", "p2", in, "p2", "b"), hier("h3", "x", "p3", in, "p3", "b")},
		}, []string{"h1:failover:b", "h2:fail:"}, `exclusivity group "x" already runs "h1"`},
		{"exclusivity against a running hierarchy", Snapshot{
			nodes(node("p1", down), node("b", up)),
			[]HierarchyView{hier("h1", "x", "p1", in, "p1", "b"), hier("h2", "x", "b", in, "b")},
		}, []string{"h1:fail:"}, `exclusivity group "x" already runs "h2"`},
		{"intelligent switchback: possible, no move", Snapshot{nodes(node("n1", up), node("n2", up)),
			[]HierarchyView{hier("h", "", "n2", in, "n1", "n2")}}, []string{"h:switchback_possible:n1"}, "n1 (priority 1) is up again"},
		{"automatic switchback", Snapshot{nodes(node("n1", up), node("n2", up)),
			[]HierarchyView{func() HierarchyView {
				h := hier("h", "", "n2", in, "n1", "n2")
				h.Switchback = backstop.SwitchbackAutomatic
				return h
			}()}},
			[]string{"h:switchback:n1"}, ""},
		{"automatic switchback waits for paths", Snapshot{nodes(NodeView{ID: "n1", State: up}, node("n2", up)),
			[]HierarchyView{func() HierarchyView {
				h := hier("h", "", "n2", in, "n1", "n2")
				h.Switchback = backstop.SwitchbackAutomatic
				return h
			}()}},
			nil, ""},
		{"never switch back to a lower priority", Snapshot{nodes(node("n1", up), node("n2", up)),
			[]HierarchyView{func() HierarchyView {
				h := hier("h", "", "n1", in, "n1", "n2")
				h.Switchback = backstop.SwitchbackAutomatic
				return h
			}()}},
			nil, ""},
		{"no switchback from an unreachable node", Snapshot{nodes(node("n1", up), node("n2", unreach)),
			[]HierarchyView{func() HierarchyView {
				h := hier("h", "", "n2", in, "n1", "n2")
				h.Switchback = backstop.SwitchbackAutomatic
				return h
			}()}},
			nil, ""},
		{"failed with no node takes a returning candidate", Snapshot{nodes(node("n1", up)),
			[]HierarchyView{hier("h", "", "", backstop.PlacementFailed, "n1")}}, []string{"h:failover:n1"}, ""},
		{"failed with no node and still none: silent", Snapshot{nodes(node("n1", down)),
			[]HierarchyView{hier("h", "", "", backstop.PlacementFailed, "n1")}}, nil, ""},
		{"never placed: left alone", Snapshot{nodes(node("n1", up)),
			[]HierarchyView{hier("h", "", "", backstop.PlacementOutOfService, "n1")}}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ds := Decide(tc.snap)
			var got []string
			for _, d := range ds {
				got = append(got, fmt.Sprintf("%s:%s:%s", d.Hierarchy, d.Kind, d.To))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("decisions %v, want %v (%+v)", got, tc.want, ds)
			}
			if tc.why == "" || len(ds) == 0 {
				return
			}
			text := ds[len(ds)-1].Reason
			for _, d := range ds {
				text += " | " + d.Reason
				for _, c := range d.Candidates {
					text += " | " + c.Node + ": " + c.Rejected
				}
			}
			if !strings.Contains(text, tc.why) {
				t.Fatalf("reasons %q do not say %q", text, tc.why)
			}
		})
	}
}

// BenchmarkDecideNodeFailure: 64 nodes, 500 hierarchies with 3..5
// priorities each and exclusivity groups; one node fails and every new
// placement is decided.
func BenchmarkDecideNodeFailure(b *testing.B) {
	s := Snapshot{Nodes: map[string]NodeView{}}
	for i := range 64 {
		id := fmt.Sprintf("n%02d", i)
		s.Nodes[id] = node(id, backstop.NodeUp)
	}
	for i := range 500 {
		k := 3 + i%3
		var prios []string
		for j := range k {
			prios = append(prios, fmt.Sprintf("n%02d", (i+j*7)%64))
		}
		group := ""
		if i%5 == 0 {
			group = fmt.Sprintf("g%d", i%25)
		}
		s.Hierarchies = append(s.Hierarchies, hier(fmt.Sprintf("h%03d", i), group, prios[0], backstop.PlacementInService, prios...))
	}
	failed := s.Nodes["n00"]
	failed.State = backstop.NodeDown
	s.Nodes["n00"] = failed
	moved := 0
	for b.Loop() {
		moved = len(Decide(s))
	}
	b.ReportMetric(float64(moved), "decisions")
}
