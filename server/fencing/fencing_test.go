package fencing

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// fakeAgent writes a fence agent that records its stdin per action and
// exits with the code named in $dir/<action>.code (default: off 0,
// status 2), printing the password it got to stderr like a careless
// agent would.
func fakeAgent(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
in=$(cat)
action=$(printf '%s\n' "$in" | sed -n 's/^action=//p')
printf '%s\n' "$in" > "` + dir + `/$action.stdin"
pw=$(printf '%s\n' "$in" | sed -n 's/^password=//p')
echo "Failed: login as fencer with $pw refused" >&2
if [ -f "` + dir + `/$action.code" ]; then exit $(cat "` + dir + `/$action.code"); fi
[ "$action" = status ] && exit 2
exit 0
`
	if err := os.WriteFile(filepath.Join(dir, "fence_fake"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func device(secret string) backstop.FenceDevice {
	plain, _ := json.Marshal(map[string]string{"password": secret})
	return backstop.FenceDevice{NodeID: "n1", Agent: "fence_fake", Params: map[string]string{"ip": "192.0.2.1", "ssl_insecure": "1"},
		SecretSealed: plain, Timeout: 5 * time.Second}
}

func open(id string, sealed []byte) ([]byte, error) {
	if id != backstop.FenceSealID("n1") {
		return nil, os.ErrPermission
	}
	return sealed, nil
}

func TestFenceOffThenStatus(t *testing.T) {
	dir := fakeAgent(t)
	r := &Runner{Dir: dir, Open: open}
	if err := r.Fence(context.Background(), device("s3cret")); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	for action, want := range map[string]string{
		"off":    "action=off\nip=192.0.2.1\nssl_insecure=1\npassword=s3cret\n",
		"status": "action=status\nip=192.0.2.1\nssl_insecure=1\npassword=s3cret\n",
	} {
		got, err := os.ReadFile(filepath.Join(dir, action+".stdin"))
		if err != nil || string(got) != want {
			t.Errorf("stdin of %s = %q (%v), want %q", action, got, err, want)
		}
	}
}

func TestFenceFailures(t *testing.T) {
	for _, c := range []struct {
		name, action, code, want string
	}{
		{"off fails", "off", "3", "off: fence_fake exited 3 (login denied)"},
		{"status says on", "status", "0", "still on"},
		{"status fails", "status", "1", "status after off: fence_fake exited 1 (generic error)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := fakeAgent(t)
			if err := os.WriteFile(filepath.Join(dir, c.action+".code"), []byte(c.code), 0o644); err != nil {
				t.Fatal(err)
			}
			err := (&Runner{Dir: dir, Open: open}).Fence(context.Background(), device("s3cret"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Fence = %v, want an error with %q", err, c.want)
			}
			if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "with *** refused") {
				t.Errorf("the detail must show the agent's output with the secret masked: %v", err)
			}
		})
	}
}

func TestFenceTimeout(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fence_slow"), []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := (&Runner{Dir: dir}).Fence(context.Background(), backstop.FenceDevice{NodeID: "n1", Agent: "fence_slow", Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "no answer within 1s") {
		t.Fatalf("Fence = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a hung agent held the fence %s past its 1 s timeout", d)
	}
}
