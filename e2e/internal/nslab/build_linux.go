package nslab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build completes b: a program given is made absolute and must exist; one
// not given is built from the module the current directory is in, into
// dir (created if needed). progress, when set, is called before each
// build with the package built.
func (b Binaries) Build(ctx context.Context, dir string, progress func(pkg string)) (Binaries, error) {
	builds := []struct {
		path *string
		pkg  string
	}{{&b.Backstopd, "./cmd/backstopd"}, {&b.Agent, "./cmd/backstop-agent"}, {&b.TCPEcho, "./e2e/internal/tcpecho"}}
	var root string
	for _, x := range builds {
		if *x.path != "" {
			abs, err := filepath.Abs(*x.path)
			if err != nil {
				return b, err
			}
			if _, err := os.Stat(abs); err != nil {
				return b, err
			}
			*x.path = abs
			continue
		}
		if root == "" {
			out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
			gomod := strings.TrimSpace(string(out))
			if err != nil || gomod == "" || gomod == os.DevNull {
				return b, fmt.Errorf("find the module to build %s: run from the backstop module or pass the binary (%v)", x.pkg, err)
			}
			root = filepath.Dir(gomod)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return b, err
			}
		}
		*x.path = filepath.Join(dir, filepath.Base(x.pkg))
		if progress != nil {
			progress(x.pkg)
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", *x.path, x.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", x.pkg, err, out)
		}
	}
	return b, nil
}
