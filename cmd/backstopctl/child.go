package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

// The commands that are the same for every kind of object a cluster owns
// (nodes, paths, hierarchies): list CLUSTER and delete CLUSTER ID.

// childKind names a kind of cluster child for the shared commands.
type childKind struct {
	arg  string // positional argument name: "NODE"
	what string // in messages: "node"
}

// pageOf turns one list response into a page, or its error.
func pageOf[T any](a *app, resp apiResponse, err error, items func() ([]T, *string)) (page[T], error) {
	if err := a.check(resp, err, http.StatusOK); err != nil {
		return page[T]{}, err
	}
	it, next := items()
	return page[T]{it, next, resp.GetBody()}, nil
}

// childListCmd builds "list CLUSTER", following next_cursor.
func childListCmd[T any](a *app, short string, fetch func(ctx context.Context, cid client.ClusterID, limit *int, cursor *string) (page[T], error),
	row func(t *table, item T), headers ...string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list CLUSTER",
		Aliases: []string{"ls"},
		Short:   short,
		Args:    positional("CLUSTER"),
	}
	lo := addListFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, err := a.cluster(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		l, err := fetchAll(cmd.Context(), lo, func(ctx context.Context, limit *int, cursor *string) (page[T], error) {
			return fetch(ctx, cid, limit, cursor)
		})
		if err != nil {
			return err
		}
		return printList(a, l, row, headers...)
	}
	return cmd
}

// childDeleteCmd builds "delete CLUSTER ID" with --if-match.
func childDeleteCmd(a *app, k childKind, short, long, done string,
	del func(ctx context.Context, cid client.ClusterID, id uuid.UUID, ifMatch *string) (apiResponse, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete CLUSTER " + k.arg,
		Aliases: []string{"rm"},
		Short:   short,
		Long:    long,
		Args:    positional("CLUSTER", k.arg),
	}
	match := addIfMatchFlag(cmd)
	yes := addYesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cid, id, err := a.clusterChild(cmd.Context(), args, k)
		if err != nil {
			return err
		}
		if err := a.confirm(*yes, fmt.Sprintf("%s %s of cluster %s: %s.", k.what, args[1], args[0], strings.ToLower(short[:1])+short[1:])); err != nil {
			return err
		}
		resp, err := del(cmd.Context(), cid, id, ifMatch(cmd, match))
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("%s %s %s", k.what, id, done)
	}
	return cmd
}
