package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newNodesCmd(a *app) *cobra.Command {
	cmd := groupCmd("nodes", "Manage the nodes (servers running backstop-agent) of a cluster", "node")
	cmd.AddCommand(
		nodesListCmd(a),
		nodesGetCmd(a),
		nodesCreateCmd(a),
		nodesUpdateCmd(a),
		nodesDeleteCmd(a),
	)
	return cmd
}

func nodesListCmd(a *app) *cobra.Command {
	return childListCmd(a, "List the nodes of a cluster, oldest first",
		func(ctx context.Context, cid client.ClusterID, limit *int, cursor *string) (page[client.Node], error) {
			resp, err := a.api.ListNodesWithResponse(ctx, cid, &client.ListNodesParams{Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.Node, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		},
		func(t *table, n client.Node) {
			t.row(n.Id.String(), n.Name, string(n.State), abbrev(n.Description, 40))
		},
		"ID", "NAME", "STATE", "DESCRIPTION")
}

func nodesGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get CLUSTER NODE",
		Short: "Show a node",
		Args:  positional("CLUSTER", "NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cid, nid, err := a.clusterChild(cmd.Context(), args, nodeKind)
			if err != nil {
				return err
			}
			resp, err := a.api.GetNodeWithResponse(cmd.Context(), cid, nid)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printNode(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
		},
	}
}

func nodesCreateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create CLUSTER --name NAME",
		Short: "Add a node and print its one-time enrollment token",
		Long: `Add a node to a cluster. The answer carries, once, the enrollment token the
node's agent uses to enroll (backstop-agent --enroll-token); it expires after
24 hours. The node stays pending until its agent enrolls.`,
		Args: positional("CLUSTER"),
	}
	var name, description string
	cmd.Flags().StringVar(&name, "name", "", "node name: letters, digits, '.', '_' and '-'")
	cmd.Flags().StringVar(&description, "description", "", "free text for operators")
	_ = cmd.MarkFlagRequired("name")
	idem := addIdempotencyFlag(a, cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, err := a.cluster(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		body := client.NodeCreate{Name: name, Description: ptrIf(cmd.Flags().Changed("description"), description)}
		key, err := idem.value(cmd, "createNode"+cid.String(), body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateNodeWithResponse(cmd.Context(), cid, &client.CreateNodeParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			fmt.Fprintln(a.stderr, "warning: enrollment_token is shown only in this answer; it cannot be read again")
			return a.printJSON(resp.Body)
		}
		n := resp.JSON201
		w := a.stdout
		fmt.Fprintf(w, "Node %s added to cluster %s.\n", n.Name, n.ClusterId)
		if err := printFields(w,
			field{"ID", n.Id.String()},
			field{"State", string(n.State)},
		); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nENROLLMENT TOKEN (shown only now; expires %s):\n\n", fmtTime(n.EnrollmentExpiresAt))
		fmt.Fprintf(w, "    %s\n\n", shownSecret(n.EnrollmentToken))
		fmt.Fprintln(w, "Give it to the node's agent (backstop-agent --enroll-token). Store it now:")
		fmt.Fprintln(w, "it will not be shown again.")
		return nil
	}
	return cmd
}

func nodesUpdateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update CLUSTER NODE",
		Short: "Rename a node or change its description",
		Args:  positional("CLUSTER", "NODE"),
	}
	var name, description string
	cmd.Flags().StringVar(&name, "name", "", "new node name")
	cmd.Flags().StringVar(&description, "description", "", "new description")
	match := addIfMatchFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, nid, err := a.clusterChild(cmd.Context(), args, nodeKind)
		if err != nil {
			return err
		}
		nameSet, descSet := cmd.Flags().Changed("name"), cmd.Flags().Changed("description")
		if !nameSet && !descSet {
			return usageErrorf("nothing to update: give --name, --description or both")
		}
		body := client.NodePatch{Name: ptrIf(nameSet, name), Description: ptrIf(descSet, description)}
		resp, err := a.api.UpdateNodeWithResponse(cmd.Context(), cid, nid, &client.UpdateNodeParams{IfMatch: ifMatch(cmd, match)}, body)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printNode(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}
	return cmd
}

var nodeKind = childKind{arg: "NODE", what: "node"}

func nodesDeleteCmd(a *app) *cobra.Command {
	return childDeleteCmd(a, nodeKind, "Remove a node and its communication paths",
		`Remove a node and its communication paths. A node still named in a
hierarchy's priorities is refused (409) until the hierarchies are changed.`,
		"removed with its communication paths",
		func(ctx context.Context, cid client.ClusterID, id client.NodeID, m *string) (apiResponse, error) {
			return a.api.DeleteNodeWithResponse(ctx, cid, id, &client.DeleteNodeParams{IfMatch: m})
		})
}

func (a *app) printNode(n *client.Node, etag string) error {
	return printFields(a.stdout,
		field{"ID", n.Id.String()},
		field{"Cluster", n.ClusterId.String()},
		field{"Name", n.Name},
		field{"Description", n.Description},
		field{"State", string(n.State)},
		field{"Version", strconv.FormatInt(n.Version, 10)},
		field{"ETag", etag},
		field{"Created", fmtTime(n.CreatedAt)},
		field{"Updated", fmtTime(n.UpdatedAt)},
	)
}
