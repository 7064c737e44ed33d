package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newHierarchiesCmd(a *app) *cobra.Command {
	cmd := groupCmd("hierarchies", "Manage protected applications (resource hierarchies)", "hierarchy")
	cmd.AddCommand(
		hierarchiesListCmd(a),
		hierarchiesGetCmd(a),
		hierarchiesCreateCmd(a),
		hierarchiesReplaceCmd(a),
		hierarchiesUpdateCmd(a),
		hierarchiesDeleteCmd(a),
		hierarchiesConfigCmd(a),
	)
	return cmd
}

func hierarchiesListCmd(a *app) *cobra.Command {
	return childListCmd(a, "List the hierarchies of a cluster, oldest first",
		func(ctx context.Context, cid client.ClusterID, limit *int, cursor *string) (page[client.Hierarchy], error) {
			resp, err := a.api.ListHierarchiesWithResponse(ctx, cid, &client.ListHierarchiesParams{Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.Hierarchy, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		},
		func(t *table, h client.Hierarchy) {
			t.row(h.Id.String(), h.Name, string(h.Switchback), h.ExclusivityGroup,
				strconv.Itoa(len(h.Resources)), strconv.Itoa(len(h.Priorities)), strconv.FormatInt(h.Version, 10))
		}, "ID", "NAME", "SWITCHBACK", "GROUP", "RESOURCES", "NODES", "VERSION")
}

func hierarchiesGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get CLUSTER HIERARCHY",
		Short: "Show a hierarchy with its resources and priorities",
		Args:  positional("CLUSTER", "HIERARCHY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cid, hid, err := a.clusterChild(cmd.Context(), args, hierarchyKind)
			if err != nil {
				return err
			}
			resp, err := a.api.GetHierarchyWithResponse(cmd.Context(), cid, hid)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printHierarchy(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
		},
	}
}

const specHelp = `FILE holds a HierarchySpec as JSON ("-" reads standard input), e.g.

  {
    "name": "mail",
    "exclusivity_group": "exchange",
    "resources": [
      {"name": "vip", "kind": "ip", "params": {"address": "198.18.1.50/24", "interface": "eth0"}},
      {"name": "spool", "kind": "volume", "params": {"source": "/srv/mail", "target": "/var/spool/postfix"}, "depends_on": ["vip"]},
      {"name": "postfix", "kind": "service", "params": {"start": "postfix start", "stop": "postfix stop"}, "depends_on": ["spool"]}
    ],
    "priorities": [
      {"node_id": "0195f7a4-1111-7000-8000-000000000001", "priority": 1},
      {"node_id": "0195f7a4-1111-7000-8000-000000000002", "priority": 2}
    ]
  }

The file is sent as it is; the server validates it and names any offending
field as a JSON pointer.`

func hierarchiesCreateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create CLUSTER -f FILE",
		Short: "Create a hierarchy from a JSON spec",
		Long:  "Create a protected application whole: its resources and per-node priorities.\n\n" + specHelp,
		Args:  positional("CLUSTER"),
	}
	var file string
	cmd.Flags().StringVarP(&file, "file", "f", "", `HierarchySpec JSON file, "-" for standard input`)
	_ = cmd.MarkFlagRequired("file")
	idem := addIdempotencyFlag(a, cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, err := a.cluster(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		spec, err := a.readSpec(file)
		if err != nil {
			return err
		}
		key, err := idem.value(cmd, "createHierarchy"+cid.String(), spec)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateHierarchyWithBodyWithResponse(cmd.Context(), cid,
			&client.CreateHierarchyParams{IdempotencyKey: &key}, "application/json", bytes.NewReader(spec))
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printHierarchy(resp.JSON201, resp.HTTPResponse.Header.Get("ETag"))
	}
	return cmd
}

func hierarchiesReplaceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replace CLUSTER HIERARCHY -f FILE",
		Short: "Replace a hierarchy's whole definition from a JSON spec",
		Long:  "Replace a hierarchy's whole definition, validated as on creation.\n\n" + specHelp,
		Args:  positional("CLUSTER", "HIERARCHY"),
	}
	var file string
	cmd.Flags().StringVarP(&file, "file", "f", "", `HierarchySpec JSON file, "-" for standard input`)
	_ = cmd.MarkFlagRequired("file")
	match := addIfMatchFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, hid, err := a.clusterChild(cmd.Context(), args, hierarchyKind)
		if err != nil {
			return err
		}
		spec, err := a.readSpec(file)
		if err != nil {
			return err
		}
		resp, err := a.api.ReplaceHierarchyWithBodyWithResponse(cmd.Context(), cid, hid,
			&client.ReplaceHierarchyParams{IfMatch: ifMatch(cmd, match)}, "application/json", bytes.NewReader(spec))
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printHierarchy(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}
	return cmd
}

var hierarchyKind = childKind{arg: "HIERARCHY", what: "hierarchy"}

func hierarchiesDeleteCmd(a *app) *cobra.Command {
	return childDeleteCmd(a, hierarchyKind, "Delete a hierarchy with its resources and priorities", "", "deleted",
		func(ctx context.Context, cid client.ClusterID, id client.HierarchyID, m *string) (apiResponse, error) {
			return a.api.DeleteHierarchyWithResponse(ctx, cid, id, &client.DeleteHierarchyParams{IfMatch: m})
		})
}

// maxSpecSize bounds a spec file; a real one is a few kilobytes.
const maxSpecSize = 8 << 20

// readSpec reads a JSON spec from a file, or from standard input for "-",
// and checks that it is one JSON object.
func (a *app) readSpec(file string) ([]byte, error) {
	var r io.Reader
	name := file
	if file == "-" {
		r, name = a.stdin, "standard input"
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > maxSpecSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxSpecSize)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %w", name, err)
	}
	return data, nil
}

func (a *app) printHierarchy(h *client.Hierarchy, etag string) error {
	w := a.stdout
	if err := printFields(w,
		field{"ID", h.Id.String()},
		field{"Cluster", h.ClusterId.String()},
		field{"Name", h.Name},
		field{"Description", h.Description},
		field{"Exclusivity group", h.ExclusivityGroup},
		field{"Switchback", string(h.Switchback)},
		field{"Version", strconv.FormatInt(h.Version, 10)},
		field{"ETag", etag},
		field{"Created", fmtTime(h.CreatedAt)},
		field{"Updated", fmtTime(h.UpdatedAt)},
	); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nResources:")
	t := newTable(w, "  NAME", "KIND", "DEPENDS ON", "QUICK CHECK", "DEEP CHECK", "LOCAL RECOVERY", "PARAMS")
	for _, r := range h.Resources {
		t.row("  "+r.Name, string(r.Kind), strings.Join(r.DependsOn, ","), checkSettings(r.QuickCheck), checkSettings(r.DeepCheck),
			fmt.Sprintf("%d restarts/%ds", r.LocalRecovery.MaxRestarts, r.LocalRecovery.WindowS), compactJSON(r.Params))
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nPriorities:")
	t = newTable(w, "  PRIORITY", "NODE")
	for _, p := range h.Priorities {
		t.row("  "+strconv.Itoa(p.Priority), p.NodeId.String())
	}
	return t.flush()
}

// checkSettings renders check settings as interval/timeout.
func checkSettings(c client.CheckSettings) string {
	return fmt.Sprintf("%dms/%dms", c.IntervalMs, c.TimeoutMs)
}

func hierarchiesUpdateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update CLUSTER HIERARCHY",
		Short: "Change the given settings of a hierarchy",
		Long: `Change the given settings of a hierarchy and leave the others. --priority
replaces the whole priority list (give every node); --resources-file
replaces the whole resource list with a JSON array of ResourceSpec.`,
		Args: positional("CLUSTER", "HIERARCHY"),
	}
	var name, description, group, resFile string
	var prios []string
	switchback := newEnumFlag("intelligent", "automatic")
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "new name")
	fl.StringVar(&description, "description", "", "new description")
	fl.StringVar(&group, "exclusivity-group", "", "new exclusivity group ('' leaves the group)")
	fl.Var(switchback, "switchback", "switchback policy")
	fl.StringArrayVar(&prios, "priority", nil, "NODE=N, repeatable: the new priority list (node by name or id; 1 is preferred)")
	fl.StringVar(&resFile, "resources-file", "", `JSON array of ResourceSpec replacing the resources ("-": standard input)`)
	match := addIfMatchFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, hid, err := a.clusterChild(ctx, args, hierarchyKind)
		if err != nil {
			return err
		}
		body := client.HierarchyPatch{
			Name:             ptrIf(fl.Changed("name"), name),
			Description:      ptrIf(fl.Changed("description"), description),
			ExclusivityGroup: ptrIf(fl.Changed("exclusivity-group"), group),
		}
		if fl.Changed("switchback") {
			sb := client.SwitchbackPolicy(switchback.value)
			body.Switchback = &sb
		}
		if len(prios) > 0 {
			ps, err := a.priorities(ctx, cid, prios)
			if err != nil {
				return err
			}
			body.Priorities = &ps
		}
		if resFile != "" {
			raw, err := a.readFile(resFile)
			if err != nil {
				return err
			}
			var rs []client.ResourceSpec
			if err := json.Unmarshal(raw, &rs); err != nil {
				return fmt.Errorf("%s: not a JSON array of resources: %w", resFile, err)
			}
			body.Resources = &rs
		}
		if body == (client.HierarchyPatch{}) {
			return usageErrorf("nothing to update: give at least one of --name, --description, --exclusivity-group, --switchback, --priority, --resources-file")
		}
		resp, err := a.api.UpdateHierarchyWithResponse(ctx, cid, hid, &client.UpdateHierarchyParams{IfMatch: ifMatch(cmd, match)}, body)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printHierarchy(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}
	return cmd
}

// readFile reads a file, or standard input for "-".
func (a *app) readFile(file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(io.LimitReader(a.stdin, maxSpecSize))
	}
	return os.ReadFile(file)
}
