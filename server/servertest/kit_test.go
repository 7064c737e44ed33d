package servertest

import (
	"errors"
	"testing"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
)

// The oracle: a start that makes a hierarchy run on two nodes is
// recorded at once, a stop or a fence ends the copy, a crashed node runs
// nothing and starts nothing until it reboots.
func TestKitsRecordEveryOverlap(t *testing.T) {
	ctx := t.Context()
	w := newWorld()
	k0, k1 := newKit(w, 0), newKit(w, 1)
	inst := func(k *Kit, hid, name string) kit.Instance {
		t.Helper()
		in, err := k.newInstance(backstop.Resource{Name: name, Kind: "service"}, kit.Env{StateDir: "/data/resources/" + hid + "/" + name})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	a0, b0 := inst(k0, "h1", "vip"), inst(k0, "h1", "svc")
	a1 := inst(k1, "h1", "vip")
	other := inst(k1, "h2", "vip")
	if inst(k0, "h1", "vip") != a0 {
		t.Fatal("a second New made a new instance: its state would not survive an agent restart")
	}
	for _, in := range []kit.Instance{a0, b0, other} {
		if err := in.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.nodes("h1"); len(got) != 1 || got[0] != 0 || len(w.overlapList()) != 0 {
		t.Fatalf("h1 on %v, overlaps %v", got, w.overlapList())
	}
	if err := a0.Check(ctx, false); err != nil {
		t.Fatalf("check of a running instance: %v", err)
	}
	k0.FailChecks("h1", "vip", nil)
	if err := a0.Check(ctx, true); err == nil || errors.Is(err, kit.ErrNotRunning) {
		t.Fatalf("check with an injected failure: %v", err)
	}
	k0.HealChecks("h1", "vip")

	if err := a1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	o := w.overlapList()
	if len(o) != 1 || o[0].Started != 1 || len(o[0].Nodes) != 2 || o[0].Resource != "vip" {
		t.Fatalf("overlaps %v, want one: vip started on node 1 while node 0 runs h1", o)
	}
	if err := a1.Fence(); err != nil {
		t.Fatal(err)
	}

	k0.crash()
	if got := w.nodes("h1"); len(got) != 0 {
		t.Fatalf("h1 runs on %v after node 0 crashed", got)
	}
	if err := a0.Check(ctx, false); !errors.Is(err, kit.ErrNotRunning) {
		t.Fatalf("check on a crashed node: %v", err)
	}
	if err := a0.Start(ctx); !errors.Is(err, errCrashed) {
		t.Fatalf("start on a crashed node: %v", err)
	}
	k0.reboot()
	if err := a0.Start(ctx); err != nil || k0.Starts("h1", "vip") != 3 {
		t.Fatalf("start after the reboot: %v, %d starts", err, k0.Starts("h1", "vip"))
	}
	if len(w.overlapList()) != 1 {
		t.Fatalf("overlaps %v", w.overlapList())
	}
}
