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

// Webhooks and SNMP trap targets: where events go. Both are addressed by
// name or id (names need not be unique: an ambiguous one is refused).

// targetFlags are the settings webhooks and SNMP targets share.
type targetFlags struct {
	name, description string
	eventTypes        []string
	severity          *enumFlag
	clusters          []string
	enabled           bool
}

func addTargetFlags(cmd *cobra.Command) *targetFlags {
	f := &targetFlags{severity: newEnumFlag(string(client.Info), string(client.Warning), string(client.Critical))}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "a name for people")
	fl.StringVar(&f.description, "description", "", "free text")
	fl.StringArrayVar(&f.eventTypes, "event-type", nil, "deliver only this event type or prefix pattern (node.*); repeatable; --event-type '' for all")
	fl.Var(f.severity, "min-severity", "deliver only events of this severity or worse")
	fl.StringArrayVar(&f.clusters, "cluster", nil, "deliver only this cluster's events (name or id); repeatable; --cluster '' for all")
	fl.BoolVar(&f.enabled, "enabled", true, "deliver events (--enabled=false pauses and cancels pending deliveries)")
	return f
}

// common returns the given shared fields as pointers (nil: not given).
func (f *targetFlags) common(ctx context.Context, a *app, cmd *cobra.Command) (name, desc *string, types *[]string, sev *client.Severity, clusters *[]uuid.UUID, enabled *bool, err error) {
	fl := cmd.Flags()
	name = ptrIf(fl.Changed("name"), f.name)
	desc = ptrIf(fl.Changed("description"), f.description)
	if fl.Changed("event-type") {
		ts := []string{}
		for _, t := range f.eventTypes {
			if t != "" {
				ts = append(ts, t)
			}
		}
		types = &ts
	}
	if fl.Changed("min-severity") {
		s := client.Severity(f.severity.value)
		sev = &s
	}
	if fl.Changed("cluster") {
		ids := []uuid.UUID{}
		for _, c := range f.clusters {
			if c == "" {
				continue
			}
			id, err := a.cluster(ctx, c)
			if err != nil {
				return name, desc, types, sev, clusters, enabled, err
			}
			ids = append(ids, id)
		}
		clusters = &ids
	}
	enabled = ptrIf(fl.Changed("enabled"), f.enabled)
	return name, desc, types, sev, clusters, enabled, nil
}

func (a *app) webhook(ctx context.Context, arg string) (uuid.UUID, error) {
	return resolve(ctx, "webhook", arg, a.webhookNames)
}

func (a *app) snmpTarget(ctx context.Context, arg string) (uuid.UUID, error) {
	return resolve(ctx, "SNMP target", arg, a.snmpTargetNames)
}

func newWebhooksCmd(a *app) *cobra.Command {
	cmd := groupCmd("webhooks", "Manage webhook receivers of events (signed, retried, in order)", "webhook")

	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List webhooks, oldest first", Args: positional()}
	lo := addListFlags(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := fetchAll(cmd.Context(), lo, func(ctx context.Context, limit *int, cursor *string) (page[client.Webhook], error) {
			resp, err := a.api.ListWebhooksWithResponse(ctx, &client.ListWebhooksParams{Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.Webhook, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		return printList(a, l, func(t *table, w client.Webhook) {
			t.row(w.Id.String(), w.Name, w.Url, fmt.Sprint(w.Enabled), string(w.MinSeverity), orAll(w.EventTypes), strconv.Itoa(len(w.ClusterIds)))
		}, "ID", "NAME", "URL", "ENABLED", "MIN SEVERITY", "EVENT TYPES", "CLUSTERS")
	}

	get := &cobra.Command{Use: "get WEBHOOK", Short: "Show a webhook (never its secret)", Args: positional("WEBHOOK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.webhook(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			resp, err := a.api.GetWebhookWithResponse(cmd.Context(), id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printWebhook(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
		}}

	create := &cobra.Command{Use: "create --url URL", Short: "Subscribe a webhook receiver; prints its signing secret once", Args: positional()}
	cf := addTargetFlags(create)
	var url string
	create.Flags().StringVar(&url, "url", "", "the receiver's http(s) URL")
	_ = create.MarkFlagRequired("url")
	idem := addIdempotencyFlag(a, create)
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		name, desc, types, sev, clusters, enabled, err := cf.common(ctx, a, cmd)
		if err != nil {
			return err
		}
		body := client.WebhookCreate{Url: url, Name: name, Description: desc, EventTypes: types, MinSeverity: sev, ClusterIds: clusters, Enabled: enabled}
		key, err := idem.value(cmd, "createWebhook", body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateWebhookWithResponse(ctx, &client.CreateWebhookParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			fmt.Fprintln(a.stderr, "warning: the secret is shown only in this answer; it will not be shown again")
			return a.printJSON(resp.Body)
		}
		wh := resp.JSON201
		fmt.Fprintf(a.stdout, "Webhook %s created (%s).\n", wh.Name, wh.Id)
		fmt.Fprintf(a.stdout, "\nSIGNING SECRET (Standard Webhooks; shown only now):\n\n    %s\n\n", shownSecret(wh.Secret))
		fmt.Fprintln(a.stdout, "Verify webhook-signature with it. Store it now: it will not be shown again.")
		return nil
	}

	update := &cobra.Command{Use: "update WEBHOOK", Short: "Change the given settings of a webhook", Args: positional("WEBHOOK")}
	uf := addTargetFlags(update)
	var newURL string
	update.Flags().StringVar(&newURL, "url", "", "the receiver's new URL")
	match := addIfMatchFlag(update)
	update.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		id, err := a.webhook(ctx, args[0])
		if err != nil {
			return err
		}
		name, desc, types, sev, clusters, enabled, err := uf.common(ctx, a, cmd)
		if err != nil {
			return err
		}
		body := client.WebhookPatch{Url: ptrIf(cmd.Flags().Changed("url"), newURL), Name: name, Description: desc, EventTypes: types, MinSeverity: sev, ClusterIds: clusters, Enabled: enabled}
		if body == (client.WebhookPatch{}) {
			return usageErrorf("nothing to update: give at least one of --url, --name, --description, --event-type, --min-severity, --cluster, --enabled")
		}
		resp, err := a.api.UpdateWebhookWithResponse(ctx, id, &client.UpdateWebhookParams{IfMatch: ifMatch(cmd, match)}, body)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printWebhook(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}

	del := &cobra.Command{Use: "delete WEBHOOK", Aliases: []string{"rm"}, Short: "Delete a webhook with its delivery log", Args: positional("WEBHOOK")}
	dmatch := addIfMatchFlag(del)
	yes := addYesFlag(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := a.webhook(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if err := a.confirm(*yes, "Delete webhook "+args[0]+" with its delivery log; its pending deliveries are dropped."); err != nil {
			return err
		}
		resp, err := a.api.DeleteWebhookWithResponse(cmd.Context(), id, &client.DeleteWebhookParams{IfMatch: ifMatch(cmd, dmatch)})
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("webhook %s deleted", id)
	}

	ping := &cobra.Command{Use: "ping WEBHOOK", Short: "Send a signed test request now and show its outcome", Args: positional("WEBHOOK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.webhook(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			resp, err := a.api.PingWebhookWithResponse(cmd.Context(), id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			return a.printDelivery(resp.JSON200, resp.Body)
		}}

	deliveries := &cobra.Command{Use: "deliveries WEBHOOK", Short: "The webhook's delivery log, newest first", Args: positional("WEBHOOK")}
	dlo := addListFlags(deliveries)
	dstatus := addDeliveryStatusFlag(deliveries)
	deliveries.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := a.webhook(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		l, err := fetchAll(cmd.Context(), dlo, func(ctx context.Context, limit *int, cursor *string) (page[client.Delivery], error) {
			resp, err := a.api.ListWebhookDeliveriesWithResponse(ctx, id, &client.ListWebhookDeliveriesParams{Limit: limit, Cursor: cursor, Status: dstatus.get()})
			return pageOf(a, resp, err, func() ([]client.Delivery, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		return printList(a, l, deliveryRow, deliveryHeaders...)
	}

	redeliver := &cobra.Command{Use: "redeliver WEBHOOK DELIVERY", Short: "Queue a delivery's event again (after fixing the receiver)", Args: positional("WEBHOOK", "DELIVERY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.webhook(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			did, err := parseID("delivery id", args[1])
			if err != nil {
				return err
			}
			key := uuid.NewString()
			resp, err := a.api.RedeliverWebhookDeliveryWithResponse(cmd.Context(), id, did, &client.RedeliverWebhookDeliveryParams{IdempotencyKey: &key})
			if err := a.check(resp, err, http.StatusAccepted); err != nil {
				return err
			}
			return a.printDelivery(resp.JSON202, resp.Body)
		}}

	rotate := &cobra.Command{Use: "rotate-secret WEBHOOK", Short: "Give a webhook a new signing secret; the old one keeps signing during the overlap", Args: positional("WEBHOOK")}
	var overlap int
	rotate.Flags().IntVar(&overlap, "overlap-s", 86400, "seconds during which deliveries carry both signatures (0: the old secret stops at once)")
	rmatch := addIfMatchFlag(rotate)
	rotate.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := a.webhook(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		key := uuid.NewString()
		resp, err := a.api.RotateWebhookSecretWithResponse(cmd.Context(), id, &client.RotateWebhookSecretParams{IfMatch: ifMatch(cmd, rmatch), IdempotencyKey: &key},
			client.WebhookSecretRotation{OverlapS: ptrIf(cmd.Flags().Changed("overlap-s"), overlap)})
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			fmt.Fprintln(a.stderr, "warning: the secret is shown only in this answer; it will not be shown again")
			return a.printJSON(resp.Body)
		}
		fmt.Fprintf(a.stdout, "Webhook %s has a new signing secret (shown only now):\n\n    %s\n\n", resp.JSON200.Name, resp.JSON200.Secret)
		return nil
	}
	cmd.AddCommand(list, get, create, update, del, ping, deliveries, webhookDeliveryCmd(a), redeliver, rotate)
	return cmd
}

func orAll(ts []string) string {
	if len(ts) == 0 {
		return "all"
	}
	return strings.Join(ts, ",")
}

func (a *app) printWebhook(w *client.Webhook, etag string) error {
	return printFields(a.stdout,
		field{"ID", w.Id.String()},
		field{"Name", w.Name},
		field{"Description", deref(w.Description)},
		field{"URL", w.Url},
		field{"Enabled", fmt.Sprint(w.Enabled)},
		field{"Event types", orAll(w.EventTypes)},
		field{"Min severity", string(w.MinSeverity)},
		field{"Clusters", uuidsOrAll(w.ClusterIds)},
		field{"Secret prefix", w.SecretPrefix},
		field{"Version", strconv.FormatInt(w.Version, 10)},
		field{"ETag", etag},
		field{"Created", fmtTime(w.CreatedAt)},
		field{"Updated", fmtTime(w.UpdatedAt)},
	)
}

func uuidsOrAll(ids []uuid.UUID) string {
	if len(ids) == 0 {
		return "all"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ",")
}

// deliveryStatusFlag is --status of the delivery logs.
type deliveryStatusFlag struct{ e *enumFlag }

func addDeliveryStatusFlag(cmd *cobra.Command) *deliveryStatusFlag {
	f := &deliveryStatusFlag{e: newEnumFlag(string(client.DeliveryStatusPending), string(client.DeliveryStatusDelivered), string(client.DeliveryStatusDeadLettered), string(client.DeliveryStatusCancelled))}
	cmd.Flags().Var(f.e, "status", "only deliveries in this status")
	return f
}

func (f *deliveryStatusFlag) get() *client.DeliveryStatusFilter {
	if f.e.value == "" {
		return nil
	}
	v := client.DeliveryStatusFilter(f.e.value)
	return &v
}

var deliveryHeaders = []string{"ID", "CREATED", "EVENT", "KIND", "STATUS", "ATTEMPTS", "LAST ERROR"}

func deliveryRow(t *table, d client.Delivery) {
	ev := d.EventType
	if d.EventSeq != nil {
		ev = fmt.Sprintf("%s #%d", ev, *d.EventSeq)
	}
	t.row(d.Id.String(), fmtTime(d.CreatedAt), ev, string(d.Kind), string(d.Status), strconv.Itoa(d.Attempts), abbrev(deref(d.LastError), 60))
}

func (a *app) printDelivery(d *client.Delivery, body []byte) error {
	if a.jsonOutput() {
		return a.printJSON(body)
	}
	if err := printFields(a.stdout,
		field{"Delivery", d.Id.String()},
		field{"Event", d.EventType},
		field{"Kind", string(d.Kind)},
		field{"Status", string(d.Status)},
		field{"Attempts", strconv.Itoa(d.Attempts)},
		field{"Last error", deref(d.LastError)},
	); err != nil {
		return err
	}
	if len(d.AttemptLog) > 0 {
		t := newTable(a.stdout, "  #", "AT", "OUTCOME", "STATUS", "LATENCY", "ERROR / ANSWER")
		for _, at := range d.AttemptLog {
			st := ""
			if at.StatusCode != nil {
				st = strconv.Itoa(*at.StatusCode)
			}
			msg := deref(at.Error)
			if msg == "" {
				msg = deref(at.ResponseExcerpt)
			}
			t.row("  "+strconv.Itoa(at.N), fmtTime(at.At), string(at.Outcome), st, fmt.Sprintf("%.1f ms", at.LatencyMs), abbrev(msg, 60))
		}
		return t.flush()
	}
	return nil
}

// snmpFlags are the SNMP-specific settings.
type snmpFlags struct {
	host                         string
	port                         int
	version                      *enumFlag
	community                    string
	v3user, v3auth, v3authPass   string
	v3privPass                   string
	v3authProto                  *enumFlag
	hostSet, portSet, verSet     bool
	communitySet, v3Set          bool
	v3authPassSet, v3privPassSet bool
}

func addSnmpFlags(cmd *cobra.Command) *snmpFlags {
	f := &snmpFlags{version: newEnumFlag(string(client.V2c), string(client.V3)), v3authProto: newEnumFlag(string(client.SHA), string(client.SHA256))}
	fl := cmd.Flags()
	fl.StringVar(&f.host, "host", "", "the manager's address or host name")
	fl.IntVar(&f.port, "port", 162, "UDP port")
	fl.Var(f.version, "snmp-version", "v2c (community) or v3 (USM user, authPriv)")
	fl.StringVar(&f.community, "community", "", "v2c community (write-only)")
	fl.StringVar(&f.v3user, "v3-user", "", "v3 USM user")
	fl.Var(f.v3authProto, "v3-auth-protocol", "v3 authentication protocol (default SHA-256)")
	fl.StringVar(&f.v3authPass, "v3-auth-passphrase", "", "v3 authentication passphrase, at least 8 characters (write-only)")
	fl.StringVar(&f.v3privPass, "v3-priv-passphrase", "", "v3 privacy (AES) passphrase, at least 8 characters (write-only)")
	return f
}

func (f *snmpFlags) read(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.hostSet, f.portSet, f.verSet = fl.Changed("host"), fl.Changed("port"), fl.Changed("snmp-version")
	f.communitySet = fl.Changed("community")
	f.v3Set = fl.Changed("v3-user") || fl.Changed("v3-auth-protocol") || fl.Changed("v3-auth-passphrase") || fl.Changed("v3-priv-passphrase")
}

func (f *snmpFlags) v3() *client.SnmpV3 {
	if !f.v3Set {
		return nil
	}
	proto := client.SHA256
	if f.v3authProto.value != "" {
		proto = client.SnmpV3AuthProtocol(f.v3authProto.value)
	}
	return &client.SnmpV3{User: f.v3user, AuthProtocol: proto, AuthPassphrase: &f.v3authPass, PrivProtocol: client.AES, PrivPassphrase: &f.v3privPass}
}

func newSnmpTargetsCmd(a *app) *cobra.Command {
	cmd := groupCmd("snmp-targets", "Manage SNMP managers that receive traps (BACKSTOP-MIB)", "snmp-target", "snmp")

	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List SNMP targets, oldest first", Args: positional()}
	lo := addListFlags(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := fetchAll(cmd.Context(), lo, func(ctx context.Context, limit *int, cursor *string) (page[client.SnmpTarget], error) {
			resp, err := a.api.ListSnmpTargetsWithResponse(ctx, &client.ListSnmpTargetsParams{Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.SnmpTarget, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		return printList(a, l, func(t *table, s client.SnmpTarget) {
			t.row(s.Id.String(), s.Name, s.Host+":"+strconv.Itoa(s.Port), string(s.SnmpVersion), fmt.Sprint(s.Enabled), string(s.MinSeverity), orAll(s.EventTypes))
		}, "ID", "NAME", "MANAGER", "VERSION", "ENABLED", "MIN SEVERITY", "EVENT TYPES")
	}

	get := &cobra.Command{Use: "get TARGET", Short: "Show an SNMP target (never its secrets)", Args: positional("TARGET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.snmpTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			resp, err := a.api.GetSnmpTargetWithResponse(cmd.Context(), id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			return a.printSnmpTarget(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
		}}

	create := &cobra.Command{Use: "create --host HOST --snmp-version v2c|v3", Short: "Send traps to an SNMP manager (default: critical events)", Args: positional()}
	cf := addTargetFlags(create)
	sf := addSnmpFlags(create)
	_ = create.MarkFlagRequired("host")
	_ = create.MarkFlagRequired("snmp-version")
	idem := addIdempotencyFlag(a, create)
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		sf.read(cmd)
		name, desc, types, sev, clusters, enabled, err := cf.common(ctx, a, cmd)
		if err != nil {
			return err
		}
		body := client.SnmpTargetCreate{Host: sf.host, Port: ptrIf(sf.portSet, sf.port), SnmpVersion: client.SnmpVersion(sf.version.value),
			Community: ptrIf(sf.communitySet, sf.community), V3: sf.v3(),
			Name: name, Description: desc, EventTypes: types, MinSeverity: sev, ClusterIds: clusters, Enabled: enabled}
		key, err := idem.value(cmd, "createSnmpTarget", body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateSnmpTargetWithResponse(ctx, &client.CreateSnmpTargetParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printSnmpTarget(resp.JSON201, resp.HTTPResponse.Header.Get("ETag"))
	}

	update := &cobra.Command{Use: "update TARGET", Short: "Change the given settings of an SNMP target", Args: positional("TARGET")}
	uf := addTargetFlags(update)
	usf := addSnmpFlags(update)
	match := addIfMatchFlag(update)
	update.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		id, err := a.snmpTarget(ctx, args[0])
		if err != nil {
			return err
		}
		usf.read(cmd)
		name, desc, types, sev, clusters, enabled, err := uf.common(ctx, a, cmd)
		if err != nil {
			return err
		}
		var ver *client.SnmpVersion
		if usf.verSet {
			v := client.SnmpVersion(usf.version.value)
			ver = &v
		}
		body := client.SnmpTargetPatch{Host: ptrIf(usf.hostSet, usf.host), Port: ptrIf(usf.portSet, usf.port), SnmpVersion: ver,
			Community: ptrIf(usf.communitySet, usf.community), V3: usf.v3(),
			Name: name, Description: desc, EventTypes: types, MinSeverity: sev, ClusterIds: clusters, Enabled: enabled}
		if body == (client.SnmpTargetPatch{}) {
			return usageErrorf("nothing to update: give at least one setting (see --help)")
		}
		resp, err := a.api.UpdateSnmpTargetWithResponse(ctx, id, &client.UpdateSnmpTargetParams{IfMatch: ifMatch(cmd, match)}, body)
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			return a.printJSON(resp.Body)
		}
		return a.printSnmpTarget(resp.JSON200, resp.HTTPResponse.Header.Get("ETag"))
	}

	del := &cobra.Command{Use: "delete TARGET", Aliases: []string{"rm"}, Short: "Delete an SNMP target with its delivery log", Args: positional("TARGET")}
	dmatch := addIfMatchFlag(del)
	yes := addYesFlag(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := a.snmpTarget(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if err := a.confirm(*yes, "Delete SNMP target "+args[0]+" with its delivery log; its pending traps are dropped."); err != nil {
			return err
		}
		resp, err := a.api.DeleteSnmpTargetWithResponse(cmd.Context(), id, &client.DeleteSnmpTargetParams{IfMatch: ifMatch(cmd, dmatch)})
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("SNMP target %s deleted", id)
	}

	test := &cobra.Command{Use: "test TARGET", Short: "Send a test trap now (check that the manager logged it)", Args: positional("TARGET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.snmpTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			resp, err := a.api.TestSnmpTargetWithResponse(cmd.Context(), id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			return a.printDelivery(resp.JSON200, resp.Body)
		}}

	deliveries := &cobra.Command{Use: "deliveries TARGET", Short: "Traps sent (or being retried) to the target, newest first", Args: positional("TARGET")}
	dlo := addListFlags(deliveries)
	dstatus := addDeliveryStatusFlag(deliveries)
	deliveries.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := a.snmpTarget(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		l, err := fetchAll(cmd.Context(), dlo, func(ctx context.Context, limit *int, cursor *string) (page[client.Delivery], error) {
			resp, err := a.api.ListSnmpDeliveriesWithResponse(ctx, id, &client.ListSnmpDeliveriesParams{Limit: limit, Cursor: cursor, Status: dstatus.get()})
			return pageOf(a, resp, err, func() ([]client.Delivery, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		return printList(a, l, deliveryRow, deliveryHeaders...)
	}

	engine := &cobra.Command{Use: "engine", Short: "The SNMPv3 engine id and boots traps are sent with (for the receiver's createUser)", Args: positional(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.api.GetSnmpEngineWithResponse(cmd.Context())
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			e := resp.JSON200
			return printFields(a.stdout, field{"Engine ID", e.EngineId}, field{"Boots", strconv.Itoa(e.Boots)}, field{"Time", strconv.Itoa(e.Time) + " s"},
				field{"net-snmp", "createUser -e 0x" + e.EngineId + " USER SHA-256 AUTHPASS AES PRIVPASS"})
		}}

	cmd.AddCommand(list, get, create, update, del, test, deliveries, engine)
	return cmd
}

func (a *app) printSnmpTarget(s *client.SnmpTarget, etag string) error {
	fields := []field{
		{"ID", s.Id.String()},
		{"Name", s.Name},
		{"Description", deref(s.Description)},
		{"Manager", s.Host + ":" + strconv.Itoa(s.Port)},
		{"SNMP version", string(s.SnmpVersion)},
	}
	if s.SnmpVersion == client.V3 {
		fields = append(fields, field{"v3 user", deref(s.V3User)}, field{"v3 auth", deref(s.V3AuthProtocol)}, field{"v3 priv", deref(s.V3PrivProtocol)})
	}
	fields = append(fields,
		field{"Enabled", fmt.Sprint(s.Enabled)},
		field{"Event types", orAll(s.EventTypes)},
		field{"Min severity", string(s.MinSeverity)},
		field{"Clusters", uuidsOrAll(s.ClusterIds)},
		field{"Version", strconv.FormatInt(s.Version, 10)},
		field{"ETag", etag},
		field{"Created", fmtTime(s.CreatedAt)},
		field{"Updated", fmtTime(s.UpdatedAt)},
	)
	return printFields(a.stdout, fields...)
}
