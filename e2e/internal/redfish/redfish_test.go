package redfish

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const agent = "/usr/sbin/fence_redfish"

// fence runs the real fence_redfish against b with action, as backstopd
// does (stdin key=value), and returns its exit code.
func fence(t *testing.T, b *BMC, action, password string) int {
	t.Helper()
	in := fmt.Sprintf("action=%s\nip=%s\nipport=%d\nusername=fencer\npassword=%s\nssl_insecure=1\n", action, b.Host(), b.Port(), password)
	cmd := exec.Command(agent)
	cmd.Stdin = strings.NewReader(in)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		t.Logf("%s %s: exit %d: %s", agent, action, ee.ExitCode(), out)
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

// The emulator speaks what the unmodified fence_redfish needs: status
// answers on (0) then off (2) around an off that runs the power-off
// once; wrong credentials and a broken BMC fail.
func TestFenceRedfishAgainstEmulator(t *testing.T) {
	if _, err := os.Stat(agent); err != nil {
		t.Skipf("%s is missing (apt-get install fence-agents): %v", agent, err)
	}
	var offs atomic.Int32
	b, err := Start("127.0.0.1", "fencer", "pw", func() { offs.Add(1) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if c := fence(t, b, "status", "pw"); c != 0 {
		t.Fatalf("status of a running system: exit %d, want 0 (on)", c)
	}
	if c := fence(t, b, "off", "wrong"); c == 0 || offs.Load() != 0 {
		t.Fatalf("off with a wrong password: exit %d, %d power-offs", c, offs.Load())
	}
	start := time.Now()
	if c := fence(t, b, "off", "pw"); c != 0 {
		t.Fatalf("off: exit %d", c)
	}
	t.Logf("fence_redfish off took %v", time.Since(start))
	if c := fence(t, b, "status", "pw"); c != 2 {
		t.Fatalf("status after off: exit %d, want 2 (off)", c)
	}
	if c := fence(t, b, "off", "pw"); c != 0 || offs.Load() != 1 {
		t.Fatalf("off again: exit %d, %d power-offs (want 0, 1)", c, offs.Load())
	}
	rs := b.Resets()
	if len(rs) != 1 || rs[len(rs)-1].Type != "ForceOff" || !rs[len(rs)-1].Authorized || rs[len(rs)-1].User != "fencer" {
		t.Fatalf("resets: %+v", rs)
	}
	b.SetBroken(500)
	if c := fence(t, b, "status", "pw"); c == 0 || c == 2 {
		t.Fatalf("status of a broken BMC: exit %d, want an error", c)
	}
}
