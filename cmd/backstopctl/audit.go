package main

import (
	"context"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newAuditCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit trail of every mutation, oldest first",
		Args:  positional(),
	}
	lo := addListFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := fetchAll(cmd.Context(), lo, func(ctx context.Context, limit *int, cursor *string) (page[client.AuditRecord], error) {
			resp, err := a.api.ListAuditWithResponse(ctx, &client.ListAuditParams{Limit: limit, Cursor: cursor})
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return page[client.AuditRecord]{}, err
			}
			return page[client.AuditRecord]{resp.JSON200.Items, resp.JSON200.NextCursor, resp.Body}, nil
		})
		if err != nil {
			return err
		}
		return printList(a, l, func(t *table, r client.AuditRecord) {
			cluster := ""
			if r.ClusterId != nil {
				cluster = r.ClusterId.String()
			}
			t.row(strconv.FormatInt(r.Id, 10), fmtTime(r.At), r.Actor, r.Action,
				r.TargetType+"/"+r.TargetId, cluster, abbrev(compactJSON(r.Details), 60))
		}, "ID", "AT", "ACTOR", "ACTION", "TARGET", "CLUSTER", "DETAILS")
	}
	return cmd
}
