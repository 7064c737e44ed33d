package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

// The rest of the contract: whoami, templates, fence devices, signed
// commands, signing keys, one webhook delivery and the MIB.

func newWhoamiCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "The API token in use: its name and role",
		Args:  positional(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.api.GetWhoamiWithResponse(cmd.Context())
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			w := resp.JSON200
			id := ""
			if w.TokenId != nil {
				id = w.TokenId.String()
			}
			return printFields(a.stdout, field{"Token", w.Name}, field{"Role", string(w.Role)}, field{"ID", id})
		},
	}
}

func newTemplatesCmd(a *app) *cobra.Command {
	cmd := groupCmd("templates", "Hierarchy templates: applications protected from a few parameters", "template")
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List the templates this backstopd ships", Args: positional(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.api.ListTemplatesWithResponse(cmd.Context())
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			t := newTable(a.stdout, "NAME", "VERSION", "TITLE", "PARAMETERS")
			for _, tp := range resp.JSON200.Items {
				var ps []string
				for _, p := range tp.Parameters {
					n := p.Name
					if p.Required {
						n += "*"
					}
					ps = append(ps, n)
				}
				t.row(tp.Name, strconv.Itoa(tp.Version), tp.Title, strings.Join(ps, ","))
			}
			return t.flush()
		}}
	get := &cobra.Command{Use: "get TEMPLATE", Short: "Show a template: its parameters and the hierarchy it expands into", Args: positional("TEMPLATE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := a.api.GetTemplateWithResponse(cmd.Context(), args[0])
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			tp := resp.JSON200
			fmt.Fprintf(a.stdout, "%s (version %d): %s\n%s\n\nParameters:\n", tp.Name, tp.Version, tp.Title, tp.Description)
			t := newTable(a.stdout, "  NAME", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION")
			for _, p := range tp.Parameters {
				def := ""
				if p.Default != nil {
					def = compactJSON(p.Default)
				}
				t.row("  "+p.Name, string(p.Type), fmt.Sprint(p.Required), def, p.Description)
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "\nCreate one: backstopctl templates apply CLUSTER %s --name NAME --param KEY=VALUE ... --priority NODE=1 ...\n", tp.Name)
			return nil
		}}
	apply := &cobra.Command{
		Use:   "apply CLUSTER TEMPLATE --name NAME --param KEY=VALUE... --priority NODE=N...",
		Short: "Create a hierarchy from a template",
		Long: `Create a hierarchy from a template with the given parameters and priorities.
A parameter value is taken as JSON when it parses (8080, true, ["a"]),
else as a string.`,
		Args: positional("CLUSTER", "TEMPLATE"),
	}
	var name, description string
	var params, prios []string
	var version int
	apply.Flags().StringVar(&name, "name", "", "the new hierarchy's name")
	apply.Flags().StringVar(&description, "description", "", "free text")
	apply.Flags().StringArrayVar(&params, "param", nil, "KEY=VALUE, repeatable")
	apply.Flags().StringArrayVar(&prios, "priority", nil, "NODE=N, repeatable (node by name or id; 1 is preferred)")
	apply.Flags().IntVar(&version, "version", 0, "the template version expected (refused when it is not the current one)")
	_ = apply.MarkFlagRequired("name")
	_ = apply.MarkFlagRequired("priority")
	idem := addIdempotencyFlag(a, apply)
	apply.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return err
		}
		body := client.TemplateInstance{Template: args[1], Name: name, Parameters: map[string]any{},
			Description: ptrIf(cmd.Flags().Changed("description"), description), Version: ptrIf(cmd.Flags().Changed("version"), version)}
		for _, p := range params {
			k, v, ok := strings.Cut(p, "=")
			if !ok || k == "" {
				return usageErrorf("--param %q: want KEY=VALUE", p)
			}
			var jv any
			if json.Unmarshal([]byte(v), &jv) == nil {
				body.Parameters[k] = jv
			} else {
				body.Parameters[k] = v
			}
		}
		if body.Priorities, err = a.priorities(ctx, cid, prios); err != nil {
			return err
		}
		key, err := idem.value(cmd, "createHierarchyFromTemplate"+cid.String(), body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateHierarchyFromTemplateWithResponse(ctx, cid, &client.CreateHierarchyFromTemplateParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printHierarchy(resp.JSON201, resp.HTTPResponse.Header.Get("ETag"))
	}
	cmd.AddCommand(list, get, apply)
	return cmd
}

// priorities parses NODE=N flags, nodes by name or id.
func (a *app) priorities(ctx context.Context, cid uuid.UUID, prios []string) ([]client.Priority, error) {
	var ps []client.Priority
	for _, p := range prios {
		n, v, ok := strings.Cut(p, "=")
		prio, perr := strconv.Atoi(strings.TrimSpace(v))
		if !ok || perr != nil {
			return nil, usageErrorf("--priority %q: want NODE=N", p)
		}
		nid, err := a.node(ctx, cid, strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		ps = append(ps, client.Priority{NodeId: nid, Priority: prio})
	}
	return ps, nil
}

func newFenceDeviceCmd(a *app) *cobra.Command {
	cmd := groupCmd("fence-device", "A node's fence device (fence_redfish, ...): the leader powers a down node off before moving its hierarchies")
	get := &cobra.Command{Use: "get CLUSTER NODE", Short: "Show a node's fence device (never its secrets)", Args: positional("CLUSTER", "NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cid, nid, err := a.clusterChild(cmd.Context(), args, nodeKind)
			if err != nil {
				return err
			}
			resp, err := a.api.GetFenceDeviceWithResponse(cmd.Context(), cid, nid)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printFenceDevice(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
		}}
	set := &cobra.Command{
		Use:   "set CLUSTER NODE --agent AGENT [--param KEY=VALUE]... [--secret KEY=VALUE]...",
		Short: "Create or replace a node's fence device",
		Long: `Create or replace a node's fence device. --param are the agent's options
(its stdin names, e.g. ip, ipport, username, systems_uri); --secret are
sealed and never shown again (given, they replace every stored secret;
absent, the stored ones are kept).`,
		Args: positional("CLUSTER", "NODE"),
	}
	var agent string
	var params, secrets []string
	var timeout int
	set.Flags().StringVar(&agent, "agent", "", "fence agent: an executable of backstopd's fence-agents directory, e.g. fence_redfish")
	set.Flags().StringArrayVar(&params, "param", nil, "KEY=VALUE option, repeatable")
	set.Flags().StringArrayVar(&secrets, "secret", nil, "KEY=VALUE secret option (password), repeatable")
	set.Flags().IntVar(&timeout, "timeout-s", 0, "time limit of one fence action")
	_ = set.MarkFlagRequired("agent")
	match := addIfMatchFlag(set)
	set.RunE = func(cmd *cobra.Command, args []string) error {
		cid, nid, err := a.clusterChild(cmd.Context(), args, nodeKind)
		if err != nil {
			return err
		}
		kv := func(flag string, in []string) (map[string]string, error) {
			m := map[string]string{}
			for _, p := range in {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return nil, usageErrorf("--%s %q: want KEY=VALUE", flag, p)
				}
				m[k] = v
			}
			return m, nil
		}
		pm, err := kv("param", params)
		if err != nil {
			return err
		}
		body := client.FenceDeviceSpec{Agent: agent, TimeoutS: ptrIf(cmd.Flags().Changed("timeout-s"), timeout)}
		if len(pm) > 0 {
			fp := client.FenceParams(pm)
			body.Params = &fp
		}
		if cmd.Flags().Changed("secret") {
			sm, err := kv("secret", secrets)
			if err != nil {
				return err
			}
			body.SecretParams = &sm
		}
		resp, err := a.api.PutFenceDeviceWithResponse(cmd.Context(), cid, nid, &client.PutFenceDeviceParams{IfMatch: ifMatch(cmd, match)}, body)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printFenceDevice(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}
	del := &cobra.Command{Use: "delete CLUSTER NODE", Aliases: []string{"rm"}, Short: "Remove a node's fence device", Args: positional("CLUSTER", "NODE")}
	dmatch := addIfMatchFlag(del)
	yes := addYesFlag(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		cid, nid, err := a.clusterChild(cmd.Context(), args, nodeKind)
		if err != nil {
			return err
		}
		if err := a.confirm(*yes, "Remove the fence device of node "+args[1]+": a down node is then no longer powered off by a peer before its hierarchies move."); err != nil {
			return err
		}
		resp, err := a.api.DeleteFenceDeviceWithResponse(cmd.Context(), cid, nid, &client.DeleteFenceDeviceParams{IfMatch: ifMatch(cmd, dmatch)})
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("fence device of node %s removed", args[1])
	}
	cmd.AddCommand(get, set, del)
	return cmd
}

func (a *app) printFenceDevice(f *client.FenceDevice, etag string) error {
	keys := make([]string, 0, len(f.Params))
	for k := range f.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ps []string
	for _, k := range keys {
		ps = append(ps, k+"="+f.Params[k])
	}
	return printFields(a.stdout,
		field{"Node", f.NodeId.String()},
		field{"Agent", f.Agent},
		field{"Options", strings.Join(ps, " ")},
		field{"Secret options", strings.Join(f.SecretParamsSet, ",")},
		field{"Timeout", strconv.Itoa(f.TimeoutS) + " s"},
		field{"Last fenced", fmtTimePtr(f.LastFencedAt)},
		field{"ETag", etag},
	)
}

func newCommandsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "commands CLUSTER",
		Short: "The signed commands sent to the cluster's agents, oldest first, with refusals' reasons",
		Args:  positional("CLUSTER"),
	}
	lo := addListFlags(cmd)
	node := addNodeFlag(cmd, "node", "only commands for this node (name or id)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return err
		}
		var nid *uuid.UUID
		if *node != "" {
			id, err := a.node(ctx, cid, *node)
			if err != nil {
				return err
			}
			nid = &id
		}
		l, err := fetchAll(ctx, lo, func(ctx context.Context, limit *int, cursor *string) (page[client.CommandInfo], error) {
			resp, err := a.api.ListCommandsWithResponse(ctx, cid, &client.ListCommandsParams{Limit: limit, Cursor: cursor, NodeId: nid})
			return pageOf(a, resp, err, func() ([]client.CommandInfo, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		if a.jsonOutput() {
			return printList(a, l, nil)
		}
		names := a.nodeNamer(ctx, cid)
		hnames := a.hierarchyNamer(ctx, cid)
		return printList(a, l, func(t *table, c client.CommandInfo) {
			t.row(fmtTime(c.IssuedAt), names.name(&c.NodeId), hnames(c.HierarchyId), string(c.Action), strconv.FormatInt(c.Epoch, 10),
				strconv.FormatInt(c.Term, 10), string(c.Status), deref(c.RejectionReason), abbrev(deref(c.Detail), 50))
		}, "ISSUED", "NODE", "HIERARCHY", "ACTION", "EPOCH", "TERM", "STATUS", "REJECTED", "DETAIL")
	}
	return cmd
}

func newSigningKeysCmd(a *app) *cobra.Command {
	cmd := groupCmd("signing-keys", "The control plane's command-signing keys", "signing-key")
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List the signing keys, oldest first", Args: positional(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.api.ListSigningKeysWithResponse(cmd.Context())
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			t := newTable(a.stdout, "KEY", "FINGERPRINT", "ACTIVE", "ENDORSED BY", "CREATED")
			for _, k := range resp.JSON200.Items {
				t.row(k.KeyId, k.Fingerprint, fmt.Sprint(k.Active), deref(k.EndorsedBy), fmtTime(k.CreatedAt))
			}
			return t.flush()
		}}
	rotate := &cobra.Command{Use: "rotate", Short: "Make a new signing key, endorsed by the current one, the active key", Args: positional()}
	yes := addYesFlag(rotate)
	rotate.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.confirm(*yes, "Rotate the command-signing key: new commands are signed with a new key that agents accept because the current one endorses it."); err != nil {
			return err
		}
		key := uuid.NewString()
		resp, err := a.api.RotateSigningKeyWithResponse(cmd.Context(), &client.RotateSigningKeyParams{IdempotencyKey: &key})
		if err := a.check(resp, err, http.StatusCreated); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		k := resp.JSON201
		fmt.Fprintf(a.stdout, "Signing key %s (%s) is active, endorsed by %s.\n", k.KeyId, k.Fingerprint, deref(k.EndorsedBy))
		return nil
	}
	cmd.AddCommand(list, rotate)
	return cmd
}

func newMIBCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "snmp-mib",
		Short: "Print BACKSTOP-MIB, the MIB module of Backstop's traps, for an SNMP manager",
		Args:  positional(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.api.GetSnmpMibWithResponse(cmd.Context())
			if err != nil {
				return a.requestError(err)
			}
			if resp.StatusCode() != http.StatusOK {
				return a.responseError(resp)
			}
			_, err = a.stdout.Write(resp.Body)
			return err
		},
	}
}

func webhookDeliveryCmd(a *app) *cobra.Command {
	return &cobra.Command{Use: "delivery WEBHOOK DELIVERY", Short: "Show one delivery of a webhook with its attempts", Args: positional("WEBHOOK", "DELIVERY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.webhook(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			did, err := parseID("delivery id", args[1])
			if err != nil {
				return err
			}
			resp, err := a.api.GetWebhookDeliveryWithResponse(cmd.Context(), id, did)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			return a.printDelivery(resp.JSON200, resp.Body)
		}}
}
