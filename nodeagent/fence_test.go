package nodeagent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestMajority(t *testing.T) {
	for _, tc := range []struct {
		visible, total int
		want           bool
	}{
		{1, 1, true}, {1, 2, false}, {2, 2, true}, {1, 3, false}, {2, 3, true},
		{2, 4, false}, {3, 4, true}, {2, 5, false}, {3, 5, true}, {32, 64, false}, {33, 64, true},
	} {
		if got := majority(tc.visible, tc.total); got != tc.want {
			t.Errorf("majority(%d of %d) = %v", tc.visible, tc.total, got)
		}
	}
}

func TestDecideFence(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   fenceInput
		want fenceVerdict
	}{
		{"lease valid, isolated", fenceInput{LeaseExpired: false, Visible: 1, Total: 3, Active: 2, Policy: "self"}, verdictHold},
		{"expired, alone of 2", fenceInput{LeaseExpired: true, Visible: 1, Total: 2, Active: 1, Policy: "self"}, verdictFence},
		{"expired, 1 of 3", fenceInput{LeaseExpired: true, Visible: 1, Total: 3, Active: 1, Policy: "self"}, verdictFence},
		{"expired, 2 of 3 visible", fenceInput{LeaseExpired: true, Visible: 2, Total: 3, Active: 1, Policy: "self"}, verdictMajority},
		{"expired, 2 of 4 (a tie is no majority)", fenceInput{LeaseExpired: true, Visible: 2, Total: 4, Active: 1, Policy: "self"}, verdictFence},
		{"expired, nothing runs", fenceInput{LeaseExpired: true, Visible: 1, Total: 2, Active: 0, Policy: "self"}, verdictHold},
		{"expired, fencing none", fenceInput{LeaseExpired: true, Visible: 1, Total: 2, Active: 1, Policy: "none"}, verdictDisabled},
		{"expired, no policy yet", fenceInput{LeaseExpired: true, Visible: 1, Total: 2, Active: 1, Policy: ""}, verdictFence},
	} {
		if got := decideFence(tc.in); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWatchdogAndLiveness(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := openWatchdog(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.kick(); err != nil {
		t.Fatal(err)
	}
	if err := w.kick(); err != nil {
		t.Fatal(err)
	}
	if err := w.close(true); err != nil {
		t.Fatal(err)
	}
	if err := w.kick(); err != nil {
		t.Fatal("kick after close must be a no-op")
	}
	b, _ := os.ReadFile(p)
	if string(b) != "kkV" {
		t.Fatalf("device got %q, want keepalives then the magic close", b)
	}

	now := time.Unix(0, 0)
	l := newLiveness(func() time.Time { return now })
	l.register("fence", time.Second)
	l.register("commands", time.Minute)
	now = now.Add(2 * time.Second)
	if s := l.stale(); len(s) != 1 || s[0] != "fence" {
		t.Fatalf("stale %v", s)
	}
	l.beat("fence")
	l.beat("unknown")
	if s := l.stale(); len(s) != 0 {
		t.Fatalf("stale %v", s)
	}
}

func TestWatchdogCloseWithoutDisarming(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := openWatchdog(p)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.kick()
	if err := w.close(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "k" {
		t.Fatalf("device got %q", b)
	}
}
