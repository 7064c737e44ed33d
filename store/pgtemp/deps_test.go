package pgtemp

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinariesDoNotLinkTestSupport: no binary links the testing package,
// which would add its flags and code to production, nor e2e/testkit, the
// test-support package (which avoids importing testing, so the first check
// would not see it). backstopd links pgtemp for its demo mode, so the
// test-database harness, which needs testing, lives in store/storetest; a
// dependency can bring testing in too (go-abnf before v0.5.4 did, through
// prometheus/common).
func TestBinariesDoNotLinkTestSupport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	// go test puts its own GOROOT/bin first in PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	const module = "github.com/backstop-ha/backstop/"
	forbidden := []string{"testing", module + "e2e/testkit"}
	for _, pkg := range []string{"cmd/backstopd", "cmd/backstop-agent", "cmd/backstopctl", "store/pgtemp"} {
		out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps",
			"-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+pkg).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
		}
		for _, f := range forbidden {
			var importers []string
			linked := false
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				fields := strings.Fields(line)
				if len(fields) == 0 {
					continue
				}
				if fields[0] == f {
					linked = true
				}
				for _, imp := range fields[1:] {
					if imp == f {
						importers = append(importers, fields[0])
					}
				}
			}
			if linked {
				t.Errorf("%s links %s; imported by %v", pkg, f, importers)
			}
		}
	}
}
