package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

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
			id, err := a.cluster(cmd.Context(), args[0])
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
	values                         []timingValue
}

// timingValue is one --*-ms flag of the custom timing profile.
type timingValue struct {
	flag string
	v    int
	set  bool
	get  func(t *client.Timing) *int
}

func timingValues() []timingValue {
	return []timingValue{
		{flag: "heartbeat-ms", get: func(t *client.Timing) *int { return &t.HeartbeatMs }},
		{flag: "lease-ttl-ms", get: func(t *client.Timing) *int { return &t.LeaseTtlMs }},
		{flag: "server-grace-ms", get: func(t *client.Timing) *int { return &t.ServerGraceMs }},
		{flag: "path-heartbeat-ms", get: func(t *client.Timing) *int { return &t.PathHeartbeatMs }},
		{flag: "path-dead-after", get: func(t *client.Timing) *int { return &t.PathDeadAfter }},
		{flag: "quick-check-interval-ms", get: func(t *client.Timing) *int { return &t.QuickCheckIntervalMs }},
		{flag: "deep-check-interval-ms", get: func(t *client.Timing) *int { return &t.DeepCheckIntervalMs }},
	}
}

// customTiming returns the timing to send with the custom profile: the
// given values over base (nil base: every value must be given). It
// returns nil when no value was given.
func (f *clusterFlags) customTiming(base *client.Timing) (*client.Timing, error) {
	given := false
	for _, tv := range f.values {
		given = given || tv.set
	}
	if !given {
		if f.timingSet && f.timing.value == string(client.Custom) {
			return nil, usageErrorf("--timing-profile custom needs the timing values: --%s", strings.Join(timingFlagNames(), ", --"))
		}
		return nil, nil
	}
	if f.timingSet && f.timing.value != string(client.Custom) {
		return nil, usageErrorf("timing values are the custom profile's: drop --timing-profile %s or use --timing-profile custom", f.timing.value)
	}
	var t client.Timing
	if base != nil {
		t = *base
	}
	var missing []string
	for _, tv := range f.values {
		if tv.set {
			*tv.get(&t) = tv.v
		} else if base == nil {
			missing = append(missing, "--"+tv.flag)
		}
	}
	if len(missing) > 0 {
		return nil, usageErrorf("the custom timing profile needs every value; missing %s", strings.Join(missing, ", "))
	}
	return &t, nil
}

func timingFlagNames() []string {
	var n []string
	for _, tv := range timingValues() {
		n = append(n, tv.flag)
	}
	return n
}

func addClusterFlags(cmd *cobra.Command) *clusterFlags {
	f := &clusterFlags{
		timing:     newEnumFlag("fast", "lan", "wan", "custom"),
		values:     timingValues(),
		switchback: newEnumFlag("intelligent", "automatic"),
		fencing:    newEnumFlag("self", "none"),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "cluster name: letters, digits, '.', '_' and '-'")
	fl.StringVar(&f.description, "description", "", "free text for operators")
	fl.Var(f.timing, "timing-profile", "timing profile (the server's default is lan); custom takes the --*-ms values below")
	for i := range f.values {
		fl.IntVar(&f.values[i].v, f.values[i].flag, 0, "custom timing: "+strings.ReplaceAll(f.values[i].flag, "-", " "))
	}
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
	for i := range f.values {
		f.values[i].set = fl.Changed(f.values[i].flag)
	}
}

// profile is the timing profile to send: custom when timing values were
// given.
func (f *clusterFlags) profile(t *client.Timing) *client.TimingProfile {
	if t != nil {
		p := client.Custom
		return &p
	}
	return ptrIf(f.timingSet, client.TimingProfile(f.timing.value))
}

func clustersCreateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create a cluster",
		Args:  positional(),
	}
	f := addClusterFlags(cmd)
	idem := addIdempotencyFlag(a, cmd)
	_ = cmd.MarkFlagRequired("name")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		f.read(cmd)
		timing, err := f.customTiming(nil)
		if err != nil {
			return err
		}
		body := client.ClusterCreate{
			Name:              f.name,
			Description:       ptrIf(f.descSet, f.description),
			TimingProfile:     f.profile(timing),
			Timing:            timing,
			SwitchbackDefault: ptrIf(f.switchSet, client.SwitchbackPolicy(f.switchback.value)),
			Fencing:           ptrIf(f.fenceSet, client.FencingPolicy(f.fencing.value)),
		}
		key, err := idem.value(cmd, "createCluster"+"", body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateClusterWithResponse(cmd.Context(), &client.CreateClusterParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
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
		id, err := a.cluster(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		f.read(cmd)
		var timing *client.Timing
		for _, tv := range f.values {
			if tv.set { // fill the values not given from the cluster's
				cur, err := a.api.GetClusterWithResponse(cmd.Context(), id)
				if err := a.check(cur, err, http.StatusOK); err != nil {
					return err
				}
				if timing, err = f.customTiming(&cur.JSON200.Timing); err != nil {
					return err
				}
				break
			}
		}
		if timing == nil && f.timingSet && f.timing.value == string(client.Custom) {
			_, err := f.customTiming(nil)
			return err
		}
		if !f.nameSet && !f.descSet && !f.timingSet && !f.switchSet && !f.fenceSet && timing == nil {
			return usageErrorf("nothing to update: give at least one of --name, --description, --timing-profile (or timing values), --switchback, --fencing")
		}
		body := client.ClusterPatch{
			Name:              ptrIf(f.nameSet, f.name),
			Description:       ptrIf(f.descSet, f.description),
			TimingProfile:     f.profile(timing),
			Timing:            timing,
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
	yes := addYesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		id, err := a.cluster(ctx, args[0])
		if err != nil {
			return err
		}
		if !*yes {
			what, err := a.clusterCascade(ctx, id)
			if err != nil {
				return err
			}
			if err := a.confirm(false, what); err != nil {
				return err
			}
		}
		resp, err := a.api.DeleteClusterWithResponse(cmd.Context(), id, &client.DeleteClusterParams{IfMatch: ifMatch(cmd, match)})
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("cluster %s deleted with its nodes, paths and hierarchies", id)
	}
	return cmd
}

// clusterCascade says what deleting cluster id removes with it.
func (a *app) clusterCascade(ctx context.Context, id uuid.UUID) (string, error) {
	resp, err := a.api.GetClusterWithResponse(ctx, id)
	if err := a.check(resp, err, http.StatusOK); err != nil {
		return "", err
	}
	nodes, err := a.listNodes(ctx, id)
	if err != nil {
		return "", err
	}
	paths, err := a.listPaths(ctx, id)
	if err != nil {
		return "", err
	}
	hs, err := a.listHierarchies(ctx, id)
	if err != nil {
		return "", err
	}
	var running []string
	for _, h := range hs {
		if h.Placement.State == client.PlacementStateInService || h.Placement.State == client.PlacementStateStarting {
			running = append(running, h.Name)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Delete cluster %s (%s) with everything it owns:\n", resp.JSON200.Name, id)
	fmt.Fprintf(&b, "  %d node(s) (their agents' enrollments), %d path(s) (%d links), %d hierarchy(ies) with their placements,\n", len(nodes), len(paths), len(paths)/2, len(hs))
	fmt.Fprintf(&b, "  fence devices, incidents, commands and the cluster's event log.\n")
	if len(running) > 0 {
		fmt.Fprintf(&b, "  In service now, and no longer protected afterwards: %s.\n", strings.Join(running, ", "))
	}
	b.WriteString("This cannot be undone.")
	return b.String(), nil
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
