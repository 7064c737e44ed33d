package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/backstop-ha/backstop/openapi/client"
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
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, cfg, log, ready) }()
	select {
	case err := <-errc:
		return err
	case addr := <-ready:
		base := hostURL(addr)
		if err := seedDemo(ctx, base, cfg.BootstrapToken, out); err != nil {
			return fmt.Errorf("create the sample cluster: %w", err)
		}
		fmt.Fprintf(out, `
Backstop demo is running (PostgreSQL in %s, port %d).

  API:          %s/v1/clusters
  API reference %s/openapi.yaml
  Admin token:  %s

  Try: curl -H "Authorization: Bearer %s" %s/v1/clusters
   or: BACKSTOP_URL=%s BACKSTOP_TOKEN=%s go run ./cmd/backstopctl clusters list

Press Ctrl-C to stop; the database is thrown away.
`, pg.Dir(), pg.Port(), base, base, cfg.BootstrapToken, cfg.BootstrapToken, base, base, cfg.BootstrapToken)
	}
	return <-errc
}

// seedDemo creates a sample mail cluster through the API, as an operator
// would: three nodes, paths between them, and a hierarchy of a virtual IP,
// a volume and Postfix with priorities 1/2/3.
func seedDemo(ctx context.Context, base, token string, out io.Writer) error {
	c, err := client.NewClientWithResponses(base, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
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
