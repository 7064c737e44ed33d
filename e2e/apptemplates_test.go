//go:build linux

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

const (
	pgBinDir  = "/usr/lib/postgresql/15/bin"
	nginxBin  = "/usr/sbin/nginx"
	nginxPort = 8080
)

// appDir makes a 0755 directory (service users must traverse it) with a
// volume source vol/ and target mnt/, removed when t ends; make it before
// the cluster, so it is removed after the nodes are gone.
func appDir(t *testing.T, prefix string) (dir, vol, mnt string) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	vol, mnt = filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	for _, d := range []string{vol, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, vol, mnt
}

func needBinary(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("needs %s (apt-get install -y %s): %v", path, pkg, err)
		}
		t.Skipf("needs %s (apt-get install -y %s): %v", path, pkg, err)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestAppTemplatesFailover proves the postgresql and nginx templates: both
// hierarchies, created through the API from their templates, run on node
// 1 (PostgreSQL's data directory and nginx's content on their volumes);
// node 1 crashes and both fail over to node 2, where a row written before
// the crash is read back through the VIP and the page is served.
func TestAppTemplatesFailover(t *testing.T) {
	requireRoot(t)
	needBinary(t, pgBinDir+"/postgres", "postgresql")
	needBinary(t, nginxBin, "nginx-light")
	_, pgVol, pgMnt := appDir(t, "backstop-pg-")
	webDir, webVol, webMnt := appDir(t, "backstop-web-")

	// PostgreSQL: a cluster made by initdb on the volume, no Unix socket
	// (/run is shared by the node namespaces), trust from the test net.
	pgData := filepath.Join(pgVol, "data")
	if err := os.Mkdir(pgData, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "chown", "postgres:postgres", pgData)
	run(t, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", pgBinDir+"/initdb", "-D", pgData, "-A", "trust", "-U", "postgres", "--no-sync")
	appendFile(t, filepath.Join(pgData, "pg_hba.conf"), "host all all 198.18.0.0/15 trust\n")
	appendFile(t, filepath.Join(pgData, "postgresql.conf"), "unix_socket_directories = ''\nfsync = on\n")

	// nginx: content and pid file on the volume, listening on the VIP.
	nc := newNSCluster(t, 2, "lan", 1)
	pgVIP, webVIP := nc.top.vip(0), nc.top.vip(1)
	if err := os.WriteFile(filepath.Join(webVol, "index.html"), []byte("served from the volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nginxConf := filepath.Join(webDir, "nginx.conf")
	conf := fmt.Sprintf("pid %[1]s/nginx.pid;\nerror_log %[1]s/error.log;\nevents {}\nhttp {\n  access_log off;\n  server { listen %[2]s:%[3]d; root %[1]s; }\n}\n", webMnt, webVIP, nginxPort)
	if err := os.WriteFile(nginxConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	prios := []map[string]any{{"node_id": nc.nodes[0], "priority": 1}, {"node_id": nc.nodes[1], "priority": 2}}
	create := func(tmpl, name string, params map[string]any) string {
		var h struct {
			ID string `json:"id"`
		}
		nc.c.do(t, "POST", "/v1/clusters/"+nc.id+"/hierarchies/from-template", map[string]any{
			"template": tmpl, "name": name, "priorities": prios, "parameters": params,
		}).must(t, 201).decode(t, &h)
		return h.ID
	}
	pg := create("postgresql", "db", map[string]any{"vip": pgVIP, "data_source": pgVol, "data_target": pgMnt, "pg_data": filepath.Join(pgMnt, "data"), "pg_bin_dir": pgBinDir})
	web := create("nginx", "web", map[string]any{"vip": webVIP, "data_source": webVol, "data_target": webMnt, "nginx_config": nginxConf, "port": nginxPort})
	// One never-two-copies checker per topology (its netlink
	// subscriptions would clash): the database's, the one whose double
	// would corrupt data. nginx's VIP is checked after the move.
	inv := nc.watchInvariantPort(pgVIP, 5432)
	nc.placeOn(pg, 0)
	nc.placeOn(web, 0)

	psql := func(sql string) (string, error) {
		out, err := exec.Command(pgBinDir+"/psql", "-h", pgVIP, "-U", "postgres", "-d", "postgres", "-X", "-Atqc", sql).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	get := func() string {
		c := &http.Client{Timeout: time.Second}
		resp, err := c.Get(fmt.Sprintf("http://%s:%d/", webVIP, nginxPort))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b))
	}
	// In service means the server process runs; it accepts connections
	// once its startup is done.
	testkit.Eventually(t, 15*time.Second, "PostgreSQL answering on node1", func() bool { _, err := psql("SELECT 1"); return err == nil })
	if out, err := psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('before the crash')"); err != nil {
		t.Fatalf("psql on node1: %v: %s", err, out)
	}
	if got := get(); got != "served from the volume" {
		t.Fatalf("GET on node1: %q", got)
	}

	at := time.Now()
	nc.crash(0, inv)
	nc.waitPlaced(pg, 1, 30*time.Second)
	nc.waitPlaced(web, 1, 30*time.Second)
	var out string
	testkit.Eventually(t, 15*time.Second, "the row read back through the VIP on node2", func() bool {
		out, _ = psql("SELECT v FROM t")
		return out == "before the crash"
	})
	pgBack := time.Since(at)
	testkit.Eventually(t, 15*time.Second, "the page served through the VIP on node2", func() bool { return get() == "served from the volume" })
	t.Logf("node1 crash → PostgreSQL answering the query on node2 +%v, nginx the page +%v (both polled)", pgBack.Round(time.Millisecond), time.Since(at).Round(time.Millisecond))
	// The crashed node's namespace keeps its addresses configured, cut
	// off (a real machine's go with it): only node2 counts.
	if hs := nc.top.holders(webVIP); !slices.Contains(hs, 1) {
		t.Errorf("nginx's VIP held by nodes %v (indexes from 0) after the failover, want node2", hs)
	}
	inv.check(t)
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
