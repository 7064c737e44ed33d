package notify

import (
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// Sign reproduces the reference vector published with the Standard
// Webhooks specification.
func TestSignStandardWebhooksVector(t *testing.T) {
	got, err := Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	s := backstop.NewWebhookSecret()
	if !strings.HasPrefix(s, "whsec_") || len(s) != 6+44 {
		t.Fatalf("new secret %q", s)
	}
	if _, err := Sign(s, "x", 1, nil); err != nil {
		t.Fatal(err)
	}
}

// The backoff doubles from the base up to the cap, half of it random.
func TestBackoff(t *testing.T) {
	s := &Service{cfg: Config{BackoffBase: time.Second, BackoffMax: 8 * time.Second}}
	for n, full := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 9: 8 * time.Second} {
		for range 50 {
			if d := s.backoff(n); d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, full/2, full)
			}
		}
	}
}

// Sealed secrets open only with the same key and for the same target.
func TestSealer(t *testing.T) {
	a, _ := NewSealer([]byte("0123456789abcdef-a"))
	b, _ := NewSealer([]byte("0123456789abcdef-b"))
	sealed := a.Seal("t1", []byte("whsec_x"))
	if p, err := a.Open("t1", sealed); err != nil || string(p) != "whsec_x" {
		t.Fatalf("open: %q %v", p, err)
	}
	if _, err := a.Open("t2", sealed); err == nil {
		t.Error("opened for another target")
	}
	if _, err := b.Open("t1", sealed); err == nil {
		t.Error("opened with another key")
	}
}

// Every event type has its notification; unknown types use the generic
// one.
func TestTrapOID(t *testing.T) {
	if got := TrapOID("node.down"); got != ".1.3.6.1.4.1.32473.0.1" {
		t.Errorf("node.down: %s", got)
	}
	if got := TrapOID("something.new"); got != ".1.3.6.1.4.1.32473.0.99" {
		t.Errorf("unknown: %s", got)
	}
	if got := snmpString(strings.Repeat("é", 200)); len(got) > 255 || !strings.HasSuffix(got, "é") {
		t.Errorf("snmpString cuts %d bytes", len(got))
	}
}
