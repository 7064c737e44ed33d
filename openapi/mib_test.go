package openapi

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
)

// TestMIBNamesEveryEventType checks that BACKSTOP-MIB has a notification
// for every event type of the taxonomy, with the name and number the
// trap sender uses.
func TestMIBNamesEveryEventType(t *testing.T) {
	re := regexp.MustCompile(`(?m)^(\w+) NOTIFICATION-TYPE[\s\S]*?::= \{ backstopNotifications (\d+) \}`)
	got := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(MIB), -1) {
		got[m[1]] = m[2]
	}
	want := map[string]string{backstop.GenericTrapName: fmt.Sprint(backstop.GenericTrap), backstop.TestTrapName: fmt.Sprint(backstop.TestTrap)}
	for _, e := range backstop.EventTypes {
		want[e.TrapName] = fmt.Sprint(e.Trap)
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("BACKSTOP-MIB: %s is notification %q, want %s", name, got[name], n)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("BACKSTOP-MIB: notification %s is no event type of the taxonomy", name)
		}
	}
	for _, e := range backstop.EventTypes {
		if !strings.Contains(string(Spec), "`"+e.Type+"`") {
			t.Errorf("the contract's Event schema does not document %s", e.Type)
		}
	}
}

// baseMIBDir finds the IETF base modules (SNMPv2-SMI, SNMPv2-TC,
// SNMPv2-CONF, SNMP-FRAMEWORK-MIB) BACKSTOP-MIB imports. Debian's
// net-snmp and libsmi packages leave them out (they are not DFSG-free),
// but Debian's erlang-snmp ships them; BACKSTOP_BASE_MIBS overrides.
func baseMIBDir(t *testing.T) string {
	if d := os.Getenv("BACKSTOP_BASE_MIBS"); d != "" {
		return d
	}
	for _, pattern := range []string{"/usr/share/snmp/mibs/ietf", "/usr/lib/erlang/lib/snmp-*/mibs"} {
		ms, _ := filepath.Glob(pattern)
		for _, d := range ms {
			if hasModule(d, "SNMPv2-SMI") {
				return d
			}
		}
	}
	missing(t, "the IETF base MIB modules (apt-get install erlang-snmp, or set BACKSTOP_BASE_MIBS)")
	return ""
}

func hasModule(dir, name string) bool {
	for _, ext := range []string{"", ".txt", ".mib", ".my"} {
		if _, err := os.Stat(filepath.Join(dir, name+ext)); err == nil {
			return true
		}
	}
	return false
}

// missing skips t, or fails it under CI, where .ci/run installs the tools.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s missing; .ci/run installs it", what)
	}
	t.Skipf("%s missing", what)
}

func tool(t *testing.T, name, pkg string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, fmt.Sprintf("%s (apt-get install %s)", name, pkg))
	}
	return p
}

// TestMIBLintsClean runs libsmi's smilint on BACKSTOP-MIB at its most
// pedantic level: it must report nothing.
func TestMIBLintsClean(t *testing.T) {
	smilint := tool(t, "smilint", "smitools")
	base := baseMIBDir(t)
	abs, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(smilint, "-l", "9", "-s", "BACKSTOP-MIB.txt")
	cmd.Env = append(os.Environ(), "SMIPATH="+base+":"+abs)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("smilint BACKSTOP-MIB.txt: %v\n%s", err, out)
	}
}

// TestMIBLoadsInNetSNMP translates the notifications' names to OIDs and
// back with net-snmp, as snmptrapd will.
func TestMIBLoadsInNetSNMP(t *testing.T) {
	snmptranslate := tool(t, "snmptranslate", "snmp")
	base := baseMIBDir(t)
	args := []string{"-m", "+BACKSTOP-MIB", "-M", "+.:" + base, "-On"}
	want := map[string]string{}
	for _, e := range backstop.EventTypes {
		args = append(args, "BACKSTOP-MIB::"+e.TrapName)
		want["BACKSTOP-MIB::"+e.TrapName] = fmt.Sprintf(".1.3.6.1.4.1.32473.0.%d", e.Trap)
	}
	out, err := exec.Command(snmptranslate, args...).Output()
	if err != nil {
		t.Fatalf("snmptranslate %v: %v\n%s", args, err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(backstop.EventTypes) {
		t.Fatalf("snmptranslate gave %d OIDs for %d notifications:\n%s", len(lines), len(backstop.EventTypes), out)
	}
	for i, e := range backstop.EventTypes {
		if w := want["BACKSTOP-MIB::"+e.TrapName]; lines[i] != w {
			t.Errorf("%s translates to %s, want %s", e.TrapName, lines[i], w)
		}
	}
	// Back from numbers to names, with a varbind: what snmptrapd logs.
	cmd := exec.Command(snmptranslate, "-m", "+BACKSTOP-MIB", "-M", "+.:"+base, ".1.3.6.1.4.1.32473.0.1", ".1.3.6.1.4.1.32473.1.1.4.0")
	out, err = cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != "BACKSTOP-MIB::backstopNodeDown" || got[1] != "BACKSTOP-MIB::backstopEventSeverity.0" {
		t.Errorf("snmptranslate back to names: %q", out)
	}
	// The module itself must load without a complaint from net-snmp.
	cmd = exec.Command(snmptranslate, "-m", "BACKSTOP-MIB", "-M", ".:"+base, "-Pe", "-On", "BACKSTOP-MIB::backstopMIB")
	b, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(b)) != ".1.3.6.1.4.1.32473" {
		t.Errorf("snmptranslate -m BACKSTOP-MIB: %v\n%s", err, b)
	}
}
