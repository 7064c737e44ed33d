package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newClustersCmd(a *app) *cobra.Command {
	cmd := groupCmd("clusters", "Manage clusters and their cluster-wide settings", "cluster")
	cmd.AddCommand(
		clustersListCmd(a),
		clustersGetCmd(a),
		clustersCreateCmd(a),
		clustersUpdateCmd(a),
		clustersDeleteCmd(a),
	)
	return cmd
}

func clustersListCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List clusters, oldest first",
		Args:    positional(),
	}
	lo := addListFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := fetchAll(cmd.Context(), lo, func(ctx context.Context, limit *int, cursor *string) (page[client.Cluster], error) {
			resp, err := a.api.ListClustersWithResponse(ctx, &client.ListClustersParams{Limit: limit, Cursor: cursor})
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return page[client.Cluster]{}, err
			}
			return page[client.Cluster]{resp.JSON200.Items, resp.JSON200.NextCursor, resp.Body}, nil
		})
		if err != nil {
			return err
		}
		return printList(a, l, func(t *table, c client.Cluster) {
			t.row(c.Id.String(), c.Name, string(c.TimingProfile), string(c.SwitchbackDefault), string(c.Fencing), abbrev(c.Description, 40))
		}, "ID", "NAME", "TIMING", "SWITCHBACK", "FENCING", "DESCRIPTION")
	}
	return cmd
}

func clustersGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get CLUSTER",
		Short: "Show a cluster with its effective timing",
		Args:  positional("CLUSTER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("cluster id", args[0])
			if err != nil {
				return err
			}
			resp, err := a.api.GetClusterWithResponse(cmd.Context(), id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printCluster(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
		},
	}
}

// clusterFlags are the settable fields of a cluster.
type clusterFlags struct {
	name, description              string
	timing, switchback, fencing    *enumFlag
	nameSet, descSet               bool
	timingSet, switchSet, fenceSet bool
}

func addClusterFlags(cmd *cobra.Command) *clusterFlags {
	f := &clusterFlags{
		timing:     newEnumFlag("fast", "lan", "wan"),
		switchback: newEnumFlag("intelligent", "automatic"),
		fencing:    newEnumFlag("self", "none"),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "cluster name: letters, digits, '.', '_' and '-'")
	fl.StringVar(&f.description, "description", "", "free text for operators")
	fl.Var(f.timing, "timing-profile", "timing profile (the server's default is lan)")
	fl.Var(f.switchback, "switchback", "default switchback policy of the cluster's hierarchies")
	fl.Var(f.fencing, "fencing", "self: an isolated agent fences itself; none: external fencing")
	return f
}

// read records which flags were given.
func (f *clusterFlags) read(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.nameSet = fl.Changed("name")
	f.descSet = fl.Changed("description")
	f.timingSet = fl.Changed("timing-profile")
	f.switchSet = fl.Changed("switchback")
	f.fenceSet = fl.Changed("fencing")
}

func clustersCreateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create a cluster",
		Args:  positional(),
	}
	f := addClusterFlags(cmd)
	idem := addIdempotencyFlag(cmd)
	_ = cmd.MarkFlagRequired("name")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		f.read(cmd)
		key, err := idem.value(cmd)
		if err != nil {
			return err
		}
		body := client.ClusterCreate{
			Name:              f.name,
			Description:       ptrIf(f.descSet, f.description),
			TimingProfile:     ptrIf(f.timingSet, client.TimingProfile(f.timing.value)),
			SwitchbackDefault: ptrIf(f.switchSet, client.SwitchbackPolicy(f.switchback.value)),
			Fencing:           ptrIf(f.fenceSet, client.FencingPolicy(f.fencing.value)),
		}
		resp, err := a.api.CreateClusterWithResponse(cmd.Context(), &client.CreateClusterParams{IdempotencyKey: &key}, body)
		if err := a.check(resp, err, http.StatusCreated); err != nil {
			return retryHint(err, key)
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printCluster(resp.JSON201, resp.HTTPResponse.Header.Get("ETag"))
	}
	return cmd
}

func clustersUpdateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update CLUSTER",
		Short: "Change the given settings of a cluster",
		Long: `Change the given settings of a cluster and leave the others.
Setting --timing-profile replaces the timing values with the profile's.`,
		Args: positional("CLUSTER"),
	}
	f := addClusterFlags(cmd)
	match := addIfMatchFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := parseID("cluster id", args[0])
		if err != nil {
			return err
		}
		f.read(cmd)
		if !f.nameSet && !f.descSet && !f.timingSet && !f.switchSet && !f.fenceSet {
			return usageErrorf("nothing to update: give at least one of --name, --description, --timing-profile, --switchback, --fencing")
		}
		body := client.ClusterPatch{
			Name:              ptrIf(f.nameSet, f.name),
			Description:       ptrIf(f.descSet, f.description),
			TimingProfile:     ptrIf(f.timingSet, client.TimingProfile(f.timing.value)),
			SwitchbackDefault: ptrIf(f.switchSet, client.SwitchbackPolicy(f.switchback.value)),
			Fencing:           ptrIf(f.fenceSet, client.FencingPolicy(f.fencing.value)),
		}
		resp, err := a.api.UpdateClusterWithResponse(cmd.Context(), id, &client.UpdateClusterParams{IfMatch: ifMatch(cmd, match)}, body)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printCluster(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}
	return cmd
}

func clustersDeleteCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete CLUSTER",
		Aliases: []string{"rm"},
		Short:   "Delete a cluster with its nodes, paths and hierarchies",
		Args:    positional("CLUSTER"),
	}
	match := addIfMatchFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := parseID("cluster id", args[0])
		if err != nil {
			return err
		}
		resp, err := a.api.DeleteClusterWithResponse(cmd.Context(), id, &client.DeleteClusterParams{IfMatch: ifMatch(cmd, match)})
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("cluster %s deleted with its nodes, paths and hierarchies", id)
	}
	return cmd
}

// deleted confirms a deletion in table output; json output stays empty, as
// the API's answer has no body.
func (a *app) deleted(format string, args ...any) error {
	if a.jsonOutput() {
		return nil
	}
	_, err := fmt.Fprintf(a.stdout, format+"\n", args...)
	return err
}

func (a *app) printCluster(c *client.Cluster, etag string) error {
	t := c.Timing
	return printFields(a.stdout,
		field{"ID", c.Id.String()},
		field{"Name", c.Name},
		field{"Description", c.Description},
		field{"Timing profile", string(c.TimingProfile)},
		field{"  Heartbeat", ms(t.HeartbeatMs)},
		field{"  Lease TTL", ms(t.LeaseTtlMs)},
		field{"  Server grace", ms(t.ServerGraceMs)},
		field{"  Path heartbeat", ms(t.PathHeartbeatMs)},
		field{"  Path dead after", strconv.Itoa(t.PathDeadAfter) + " missed heartbeats"},
		field{"  Quick check interval", ms(t.QuickCheckIntervalMs)},
		field{"  Deep check interval", ms(t.DeepCheckIntervalMs)},
		field{"Switchback", string(c.SwitchbackDefault)},
		field{"Fencing", string(c.Fencing)},
		field{"Version", strconv.FormatInt(c.Version, 10)},
		field{"ETag", etag},
		field{"Created", fmtTime(c.CreatedAt)},
		field{"Updated", fmtTime(c.UpdatedAt)},
	)
}

func ms(v int) string { return strconv.Itoa(v) + "ms" }
