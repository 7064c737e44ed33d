package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/client"
)

// Objects are named by UUID or by name wherever an id is accepted. Clusters,
// nodes and hierarchies are looked up with the API's ?name= filter (one
// request); other kinds by reading the owning list (every page) and taking
// the one object of that name. Cluster, node and hierarchy names are
// unique in their scope (the server enforces it); webhook and SNMP target
// names need not be, so an ambiguous name is refused with the candidates'
// ids.

// named is one object of a list with its id and name.
type named struct {
	id   uuid.UUID
	name string
}

// resolve returns the id of arg: arg itself when it is a UUID, else the
// id of the one object named arg among those list returns. what names the
// kind in messages ("cluster").
func resolve(ctx context.Context, what, arg string, list func(ctx context.Context) ([]named, error)) (uuid.UUID, error) {
	return resolveBy(ctx, what, arg, nil, list)
}

// resolveBy is resolve with exact, the API's lookup by name (?name=),
// tried first: one request for a name that exists. The whole list is
// read only when it finds nothing, to say "did you mean" for a name that
// differs in case.
func resolveBy(ctx context.Context, what, arg string, exact func(ctx context.Context, name string) ([]named, error), list func(ctx context.Context) ([]named, error)) (uuid.UUID, error) {
	if id, err := uuid.Parse(arg); err == nil {
		return id, nil
	}
	if strings.TrimSpace(arg) == "" {
		return uuid.Nil, usageErrorf("empty %s name or id", what)
	}
	if exact != nil {
		hits, err := exact(ctx, arg)
		if err != nil {
			return uuid.Nil, fmt.Errorf("look up %s %q: %w", what, arg, err)
		}
		if len(hits) == 1 && hits[0].name == arg {
			return hits[0].id, nil
		}
	}
	items, err := list(ctx)
	if err != nil {
		return uuid.Nil, fmt.Errorf("look up %s %q: %w", what, arg, err)
	}
	var hits []named
	for _, it := range items {
		if it.name == arg {
			hits = append(hits, it)
		}
	}
	if len(hits) == 0 {
		for _, it := range items { // a name differs only in case: say so
			if strings.EqualFold(it.name, arg) {
				hits = append(hits, it)
			}
		}
		if len(hits) == 1 {
			return uuid.Nil, fmt.Errorf("no %s named %q (names are case-sensitive; did you mean %q?)", what, arg, hits[0].name)
		}
		return uuid.Nil, fmt.Errorf("no %s named %q", what, arg)
	}
	if len(hits) > 1 {
		ids := make([]string, len(hits))
		for i, h := range hits {
			ids[i] = h.id.String()
		}
		sort.Strings(ids)
		return uuid.Nil, fmt.Errorf("%d %ss are named %q: give the id (%s)", len(hits), what, arg, strings.Join(ids, ", "))
	}
	return hits[0].id, nil
}

// listAll reads every page of a list operation.
func listAll[T any](ctx context.Context, fetch fetchFunc[T]) ([]T, error) {
	l, err := fetchAll(ctx, &listOptions{}, fetch)
	return l.items, err
}

func (a *app) clusterNames(ctx context.Context) ([]named, error) {
	items, err := listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.Cluster], error) {
		resp, err := a.api.ListClustersWithResponse(ctx, &client.ListClustersParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.Cluster, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
	out := make([]named, len(items))
	for i, c := range items {
		out[i] = named{c.Id, c.Name}
	}
	return out, err
}

func (a *app) nodeNames(ctx context.Context, cid uuid.UUID) ([]named, error) {
	items, err := a.listNodes(ctx, cid)
	out := make([]named, len(items))
	for i, n := range items {
		out[i] = named{n.Id, n.Name}
	}
	return out, err
}

func (a *app) listNodes(ctx context.Context, cid uuid.UUID) ([]client.Node, error) {
	return listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.Node], error) {
		resp, err := a.api.ListNodesWithResponse(ctx, cid, &client.ListNodesParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.Node, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
}

func (a *app) listHierarchies(ctx context.Context, cid uuid.UUID) ([]client.Hierarchy, error) {
	return listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.Hierarchy], error) {
		resp, err := a.api.ListHierarchiesWithResponse(ctx, cid, &client.ListHierarchiesParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.Hierarchy, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
}

func (a *app) listPaths(ctx context.Context, cid uuid.UUID) ([]client.Path, error) {
	return listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.Path], error) {
		resp, err := a.api.ListPathsWithResponse(ctx, cid, &client.ListPathsParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.Path, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
}

func (a *app) hierarchyNames(ctx context.Context, cid uuid.UUID) ([]named, error) {
	items, err := a.listHierarchies(ctx, cid)
	out := make([]named, len(items))
	for i, h := range items {
		out[i] = named{h.Id, h.Name}
	}
	return out, err
}

func (a *app) webhookNames(ctx context.Context) ([]named, error) {
	items, err := listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.Webhook], error) {
		resp, err := a.api.ListWebhooksWithResponse(ctx, &client.ListWebhooksParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.Webhook, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
	out := make([]named, len(items))
	for i, w := range items {
		out[i] = named{w.Id, w.Name}
	}
	return out, err
}

func (a *app) snmpTargetNames(ctx context.Context) ([]named, error) {
	items, err := listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.SnmpTarget], error) {
		resp, err := a.api.ListSnmpTargetsWithResponse(ctx, &client.ListSnmpTargetsParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.SnmpTarget, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
	out := make([]named, len(items))
	for i, s := range items {
		out[i] = named{s.Id, s.Name}
	}
	return out, err
}

func (a *app) tokenNames(ctx context.Context) ([]named, error) {
	items, err := listAll(ctx, func(ctx context.Context, limit *int, cursor *string) (page[client.Token], error) {
		resp, err := a.api.ListTokensWithResponse(ctx, &client.ListTokensParams{Limit: limit, Cursor: cursor})
		return pageOf(a, resp, err, func() ([]client.Token, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
	})
	out := make([]named, len(items))
	for i, t := range items {
		out[i] = named{t.Id, t.Name}
	}
	return out, err
}

// cluster resolves a CLUSTER argument.
func (a *app) cluster(ctx context.Context, arg string) (uuid.UUID, error) {
	return resolveBy(ctx, "cluster", arg, func(ctx context.Context, name string) ([]named, error) {
		resp, err := a.api.ListClustersWithResponse(ctx, &client.ListClustersParams{Name: &name})
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return nil, err
		}
		var out []named
		for _, c := range resp.JSON200.Items {
			out = append(out, named{c.Id, c.Name})
		}
		return out, nil
	}, a.clusterNames)
}

// node resolves a NODE argument of cluster cid.
func (a *app) node(ctx context.Context, cid uuid.UUID, arg string) (uuid.UUID, error) {
	return resolveBy(ctx, "node", arg, func(ctx context.Context, name string) ([]named, error) {
		resp, err := a.api.ListNodesWithResponse(ctx, cid, &client.ListNodesParams{Name: &name})
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return nil, err
		}
		var out []named
		for _, n := range resp.JSON200.Items {
			out = append(out, named{n.Id, n.Name})
		}
		return out, nil
	}, func(ctx context.Context) ([]named, error) { return a.nodeNames(ctx, cid) })
}

// hierarchy resolves a HIERARCHY argument of cluster cid.
func (a *app) hierarchy(ctx context.Context, cid uuid.UUID, arg string) (uuid.UUID, error) {
	return resolveBy(ctx, "hierarchy", arg, func(ctx context.Context, name string) ([]named, error) {
		resp, err := a.api.ListHierarchiesWithResponse(ctx, cid, &client.ListHierarchiesParams{Name: &name})
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return nil, err
		}
		var out []named
		for _, h := range resp.JSON200.Items {
			out = append(out, named{h.Id, h.Name})
		}
		return out, nil
	}, func(ctx context.Context) ([]named, error) { return a.hierarchyNames(ctx, cid) })
}

// clusterChild resolves CLUSTER and a child argument of kind k.
func (a *app) clusterChild(ctx context.Context, args []string, k childKind) (uuid.UUID, uuid.UUID, error) {
	cid, err := a.cluster(ctx, args[0])
	if err != nil {
		return cid, cid, err
	}
	var id uuid.UUID
	switch k.what {
	case "node":
		id, err = a.node(ctx, cid, args[1])
	case "hierarchy":
		id, err = a.hierarchy(ctx, cid, args[1])
	default: // paths have no names
		id, err = parseID(k.what+" id", args[1])
	}
	return cid, id, err
}

// nodeNamer maps node ids to names for display, falling back to the id.
type nodeNamer map[uuid.UUID]string

func (a *app) nodeNamer(ctx context.Context, cid uuid.UUID) nodeNamer {
	m := nodeNamer{}
	if nodes, err := a.listNodes(ctx, cid); err == nil {
		for _, n := range nodes {
			m[n.Id] = n.Name
		}
	}
	return m
}

func (m nodeNamer) name(id *uuid.UUID) string {
	if id == nil {
		return ""
	}
	if n, ok := m[*id]; ok {
		return n
	}
	return id.String()
}
