package sdk_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/server/servertest"
	"github.com/backstop-ha/backstop/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

// skipOrFail skips outside CI and fails in it, where everything must run.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// TestTypeScriptSDKAgainstLiveServer compiles the TypeScript SDK and its
// test (tsc) and runs the test (node --test) against a control plane with
// two agents: create and read a cluster, a typed 4xx Problem, and an SSE
// subscription that sees the event of a placement it asks for.
func TestTypeScriptSDKAgainstLiveServer(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "needs node (apt-get install -y nodejs): %v", err)
	}
	dir, err := filepath.Abs("ts")
	if err != nil {
		t.Fatal(err)
	}
	tsc := filepath.Join(dir, "node_modules", ".bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		skipOrFail(t, "needs the SDK's dependencies: run npm ci in openapi/sdk/ts (.ci/run does): %v", err)
	}

	h := servertest.New(t, servertest.Options{Nodes: 2, Profile: "lan"})
	hid := h.CreateHierarchy(servertest.HierarchySpec{Name: "web"})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out := t.TempDir()
	build := exec.CommandContext(ctx, node, tsc, "-p", dir, "--outDir", filepath.Join(dir, "dist"))
	build.Dir = dir
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, b)
	}
	run := exec.CommandContext(ctx, node, "--test", "--test-reporter", "spec", filepath.Join(dir, "dist", "test"))
	run.Dir = out
	run.Env = append(os.Environ(),
		"BACKSTOP_URL="+h.URL,
		"BACKSTOP_TOKEN="+servertest.AdminToken,
		"BACKSTOP_CLUSTER_ID="+h.ClusterID,
		"BACKSTOP_HIERARCHY_ID="+hid,
		"BACKSTOP_NODE_ID="+h.Nodes[0].ID,
	)
	b, err := run.CombinedOutput()
	t.Logf("node --test:\n%s", b)
	if err != nil {
		t.Fatalf("the TypeScript SDK's test failed: %v", err)
	}
	h.WaitPlaced("web", 0)
}
