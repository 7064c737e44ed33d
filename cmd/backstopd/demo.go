package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/pki"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/pgtemp"
)

// runDemo starts a throwaway PostgreSQL, serves the API on it, creates a
// sample cluster through the API, prints how to reach it, and cleans
// everything up when ctx ends (Ctrl-C).
func runDemo(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	fmt.Fprintln(out, "Starting a throwaway PostgreSQL ...")
	pg, err := pgtemp.Start(ctx, pgtemp.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := pg.Stop(); err != nil {
			log.Error("stop demo PostgreSQL", "err", err)
		}
	}()
	cfg.DatabaseURL = pg.URL("postgres")
	if cfg.BootstrapToken == "" {
		cfg.BootstrapToken = store.NewSecret(store.TokenPrefix)
	}
	if len(cfg.SecretKey) == 0 {
		cfg.SecretKey = []byte(store.NewSecret("")) // the demo database is thrown away with it
	}
	var caFile string
	if !cfg.InsecureHTTP && cfg.TLSCert == "" {
		f, err := demoTLS(pg.Dir(), cfg.Listen)
		if err != nil {
			return fmt.Errorf("demo TLS: %w", err)
		}
		cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, caFile = f.Cert, f.Key, f.CA, f.CA
	} else if cfg.TLSCA != "" {
		caFile = cfg.TLSCA
	}
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, cfg, log, ready) }()
	select {
	case err := <-errc:
		return err
	case addr := <-ready:
		base := hostURL(addr, cfg.InsecureHTTP)
		if err := seedDemo(ctx, base, caFile, cfg.BootstrapToken, out); err != nil {
			return fmt.Errorf("create the sample cluster: %w", err)
		}
		curlCA, ctlCA := "", ""
		if caFile != "" {
			curlCA, ctlCA = "--cacert "+caFile+" ", "BACKSTOP_CA_FILE="+caFile+" "
			fmt.Fprintf(out, "\nServing HTTPS with a throwaway CA: %s (SHA-256 %s).\n", caFile, caFingerprint(caFile))
		}
		fmt.Fprintf(out, `
Backstop demo is running (PostgreSQL in %s, port %d).

  API:          %s/v1/clusters
  API reference %s/openapi.yaml
  Admin token:  %s

  Try: curl %s-H "Authorization: Bearer %s" %s/v1/clusters
   or: %sBACKSTOP_URL=%s BACKSTOP_TOKEN=%s go run ./cmd/backstopctl clusters list

Press Ctrl-C to stop; the database is thrown away.
`, pg.Dir(), pg.Port(), base, base, cfg.BootstrapToken, curlCA, cfg.BootstrapToken, base, ctlCA, base, cfg.BootstrapToken)
	}
	return <-errc
}

// demoTLS makes a throwaway CA and a server certificate for the demo's
// listen address and the local host's names, in dir (thrown away with the
// demo database).
func demoTLS(dir, listen string) (pki.Files, error) {
	ca, err := pki.NewCA("Backstop demo CA", 7*24*time.Hour)
	if err != nil {
		return pki.Files{}, err
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" && !slices.Contains(hosts, h) {
		hosts = append(hosts, h)
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return ca.WriteFiles(filepath.Join(dir, "tls"), hosts, 7*24*time.Hour)
}

// caFingerprint is the SHA-256 fingerprint of the CA certificate in path.
func caFingerprint(path string) string {
	cs, err := pki.ReadCertificates(path)
	if err != nil {
		return "?"
	}
	return pki.Fingerprint(cs[0].Raw)
}

// seedDemo creates a sample mail cluster through the API, as an operator
// would: three nodes, paths between them, and a hierarchy of a virtual IP,
// a volume and Postfix with priorities 1/2/3.
func seedDemo(ctx context.Context, base, caFile, token string, out io.Writer) error {
	tlsCfg, err := pki.ClientConfig(caFile)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}}
	c, err := client.NewClientWithResponses(base, client.WithHTTPClient(hc), client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+token)
		return nil
	}))
	if err != nil {
		return err
	}
	desc := "Demo: Postfix for example.com on three nodes"
	cl, err := c.CreateClusterWithResponse(ctx, nil, client.ClusterCreate{Name: "mail", Description: &desc})
	if err != nil {
		return err
	}
	if cl.JSON201 == nil {
		return fmt.Errorf("create cluster: %s: %s", cl.Status(), cl.Body)
	}
	cid := cl.JSON201.Id
	var nodes []client.Node
	for i := 1; i <= 3; i++ {
		n, err := c.CreateNodeWithResponse(ctx, cid, nil, client.NodeCreate{Name: fmt.Sprintf("mx%d", i)})
		if err != nil {
			return err
		}
		if n.JSON201 == nil {
			return fmt.Errorf("create node: %s: %s", n.Status(), n.Body)
		}
		nodes = append(nodes, client.Node{Id: n.JSON201.Id, Name: n.JSON201.Name})
	}
	for i := 0; i < 3; i++ {
		a, b := nodes[i], nodes[(i+1)%3]
		p, err := c.CreatePathWithResponse(ctx, cid, nil, client.PathCreate{
			A: client.PathEnd{NodeId: a.Id, Address: fmt.Sprintf("198.18.1.%d", 11+i)},
			B: client.PathEnd{NodeId: b.Id, Address: fmt.Sprintf("198.18.1.%d", 11+(i+1)%3)},
		})
		if err != nil {
			return err
		}
		if p.JSON201 == nil {
			return fmt.Errorf("create path: %s: %s", p.Status(), p.Body)
		}
	}
	deps := func(names ...string) *[]string { return &names }
	params := func(kv ...any) *map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return &m
	}
	group := "mail"
	h, err := c.CreateHierarchyWithResponse(ctx, cid, nil, client.HierarchySpec{
		Name:             "postfix",
		ExclusivityGroup: &group,
		Resources: []client.ResourceSpec{
			{Name: "vip", Kind: client.ResourceKindIp, Params: params("address", "198.18.1.50/24", "interface", "eth0")},
			{Name: "spool", Kind: client.ResourceKindVolume, Params: params("source", "/srv/mail", "target", "/var/spool/postfix"), DependsOn: deps("vip")},
			{Name: "postfix", Kind: client.ResourceKindOcf, Params: params("agent", "heartbeat:postfix", "params", map[string]any{"config_dir": "/etc/postfix"}), DependsOn: deps("spool")},
			{Name: "smtp", Kind: client.ResourceKindSmtp, Params: params("host", "198.18.1.50", "port", 25), DependsOn: deps("postfix")},
		},
		Priorities: []client.Priority{
			{NodeId: nodes[0].Id, Priority: 1},
			{NodeId: nodes[1].Id, Priority: 2},
			{NodeId: nodes[2].Id, Priority: 3},
		},
	})
	if err != nil {
		return err
	}
	if h.JSON201 == nil {
		return fmt.Errorf("create hierarchy: %s: %s", h.Status(), h.Body)
	}
	fmt.Fprintf(out, "Created cluster %q (%s): nodes mx1..mx3, 3 paths, hierarchy %q.\n", cl.JSON201.Name, cid, h.JSON201.Name)
	return nil
}
