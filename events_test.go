package backstop

import "testing"

func TestTargetFilter(t *testing.T) {
	ev := Event{ClusterID: "c1", Type: "node.down", Severity: SeverityCritical}
	for _, tc := range []struct {
		f    TargetFilter
		want bool
	}{
		{TargetFilter{}, true},
		{TargetFilter{MinSeverity: SeverityCritical}, true},
		{TargetFilter{EventTypes: []string{"node.*"}}, true},
		{TargetFilter{EventTypes: []string{"node.up", "node.down"}}, true},
		{TargetFilter{EventTypes: []string{"hierarchy.*"}}, false},
		{TargetFilter{EventTypes: []string{"node"}}, false},
		{TargetFilter{ClusterIDs: []string{"c2"}}, false},
		{TargetFilter{ClusterIDs: []string{"c2", "c1"}}, true},
	} {
		if got := tc.f.Matches(ev); got != tc.want {
			t.Errorf("%+v matches %v, want %v", tc.f, got, tc.want)
		}
	}
	if (TargetFilter{MinSeverity: SeverityCritical}).Matches(Event{Type: "node.up", Severity: SeverityInfo}) {
		t.Error("an info event passed a critical filter")
	}
	for p, ok := range map[string]bool{"node.*": true, "node.down": true, "delivery.dead_lettered": true, "nod.*": false, "node.gone": false, "*": false} {
		if ValidEventPattern(p) != ok {
			t.Errorf("ValidEventPattern(%q) = %v", p, !ok)
		}
	}
	seen := map[int]bool{}
	for _, e := range EventTypes {
		if seen[e.Trap] || e.Trap == GenericTrap || e.Trap == TestTrap {
			t.Errorf("trap number %d used twice", e.Trap)
		}
		seen[e.Trap] = true
	}
}
