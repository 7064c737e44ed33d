package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newPathsCmd(a *app) *cobra.Command {
	cmd := groupCmd("paths", "Manage communication paths (heartbeat links) between nodes", "path")
	cmd.AddCommand(
		pathsListCmd(a),
		pathsGetCmd(a),
		pathsCreateCmd(a),
		pathsDeleteCmd(a),
	)
	return cmd
}

var pathHeaders = []string{"ID", "LINK", "LOCAL NODE", "LOCAL ADDRESS", "REMOTE NODE", "REMOTE ADDRESS", "PRIORITY"}

func pathRow(t *table, p client.Path) {
	t.row(p.Id.String(), p.LinkId.String(), p.LocalNodeId.String(), p.LocalAddress,
		p.RemoteNodeId.String(), p.RemoteAddress, strconv.Itoa(p.Priority))
}

func pathsListCmd(a *app) *cobra.Command {
	return childListCmd(a, "List the directed paths of a cluster (two per link)",
		func(ctx context.Context, cid client.ClusterID, limit *int, cursor *string) (page[client.Path], error) {
			resp, err := a.api.ListPathsWithResponse(ctx, cid, &client.ListPathsParams{Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.Path, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		}, pathRow, pathHeaders...)
}

func pathsGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get CLUSTER PATH",
		Short: "Show one direction of a communication path",
		Args:  positional("CLUSTER", "PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cid, pid, err := a.clusterChild(cmd.Context(), args, pathKind)
			if err != nil {
				return err
			}
			resp, err := a.api.GetPathWithResponse(cmd.Context(), cid, pid)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			p := resp.JSON200
			return printFields(a.stdout,
				field{"ID", p.Id.String()},
				field{"Cluster", p.ClusterId.String()},
				field{"Link", p.LinkId.String()},
				field{"Reverse", p.ReverseId.String()},
				field{"Local node", p.LocalNodeId.String()},
				field{"Local address", p.LocalAddress},
				field{"Remote node", p.RemoteNodeId.String()},
				field{"Remote address", p.RemoteAddress},
				field{"Priority", strconv.Itoa(p.Priority)},
				field{"ETag", resp.HTTPResponse.Header.Get("ETag")},
				field{"Created", fmtTime(p.CreatedAt)},
			)
		},
	}
}

func pathsCreateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create CLUSTER --a NODE_ID=ADDRESS --b NODE_ID=ADDRESS",
		Short: "Create a heartbeat link between two nodes, in both directions",
		Args:  positional("CLUSTER"),
	}
	var endA, endB string
	var priority int
	cmd.Flags().StringVar(&endA, "a", "", "one end: NODE=ADDRESS (node by name or id), the IP address that node uses on the path")
	cmd.Flags().StringVar(&endB, "b", "", "the other end: NODE=ADDRESS")
	cmd.Flags().IntVar(&priority, "priority", 1, "path priority, 1..99; lower is preferred")
	_ = cmd.MarkFlagRequired("a")
	_ = cmd.MarkFlagRequired("b")
	idem := addIdempotencyFlag(a, cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, err := a.cluster(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		a1, err := a.pathEnd(cmd.Context(), cid, "--a", endA)
		if err != nil {
			return err
		}
		b1, err := a.pathEnd(cmd.Context(), cid, "--b", endB)
		if err != nil {
			return err
		}
		body := client.PathCreate{A: a1, B: b1, Priority: ptrIf(cmd.Flags().Changed("priority"), priority)}
		key, err := idem.value(cmd, "createPath"+cid.String(), body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreatePathWithResponse(cmd.Context(), cid, &client.CreatePathParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		t := newTable(a.stdout, pathHeaders...)
		pathRow(t, resp.JSON201.Forward)
		pathRow(t, resp.JSON201.Reverse)
		return t.flush()
	}
	return cmd
}

var pathKind = childKind{arg: "PATH", what: "path"}

func pathsDeleteCmd(a *app) *cobra.Command {
	return childDeleteCmd(a, pathKind, "Delete a communication path, both directions", "", "deleted, both directions",
		func(ctx context.Context, cid client.ClusterID, id client.PathID, m *string) (apiResponse, error) {
			return a.api.DeletePathWithResponse(ctx, cid, id, &client.DeletePathParams{IfMatch: m})
		})
}

// pathEnd parses NODE=ADDRESS, the node by name or id.
func (a *app) pathEnd(ctx context.Context, cid client.ClusterID, flag, s string) (client.PathEnd, error) {
	node, addr, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(addr) == "" || strings.TrimSpace(node) == "" {
		return client.PathEnd{}, usageErrorf("%s %q: want NODE_ID=ADDRESS (or NODE_NAME=ADDRESS)", flag, s)
	}
	id, err := a.node(ctx, cid, strings.TrimSpace(node))
	if err != nil {
		return client.PathEnd{}, err
	}
	return client.PathEnd{NodeId: id, Address: strings.TrimSpace(addr)}, nil
}
