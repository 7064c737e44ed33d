package pgtemp

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinariesDoNotLinkTesting: no binary links the testing package, which
// would add its flags and code to production. backstopd links pgtemp for
// its demo mode, so the test-database harness, which needs testing, lives in
// store/storetest; a dependency can bring testing in too (go-abnf before
// v0.5.4 did, through prometheus/common).
func TestBinariesDoNotLinkTesting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	// go test puts its own GOROOT/bin first in PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	const module = "github.com/backstop-ha/backstop/"
	for _, pkg := range []string{"cmd/backstopd", "cmd/backstop-agent", "cmd/backstopctl", "store/pgtemp"} {
		out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps",
			"-f", `{{.ImportPath}}{{range .Imports}}{{if eq . "testing"}} imports testing{{end}}{{end}}`,
			module+pkg).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
		}
		var importers []string
		linked := false
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line == "testing" {
				linked = true
			}
			if path, ok := strings.CutSuffix(line, " imports testing"); ok {
				importers = append(importers, path)
			}
		}
		if linked {
			t.Errorf("%s links the testing package; imported by %v", pkg, importers)
		}
	}
}
