package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newTokensCmd(a *app) *cobra.Command {
	cmd := groupCmd("tokens", "Manage API tokens and their roles", "token")
	cmd.AddCommand(
		tokensListCmd(a),
		tokensCreateCmd(a),
		tokensGetCmd(a),
		tokensReissueCmd(a),
		tokensDeleteCmd(a),
	)
	return cmd
}

func tokensListCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List API tokens (never their secrets), oldest first",
		Args:    positional(),
	}
	lo := addListFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := fetchAll(cmd.Context(), lo, func(ctx context.Context, limit *int, cursor *string) (page[client.Token], error) {
			resp, err := a.api.ListTokensWithResponse(ctx, &client.ListTokensParams{Limit: limit, Cursor: cursor})
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return page[client.Token]{}, err
			}
			return page[client.Token]{resp.JSON200.Items, resp.JSON200.NextCursor, resp.Body}, nil
		})
		if err != nil {
			return err
		}
		return printList(a, l, func(t *table, tk client.Token) {
			t.row(tk.Id.String(), tk.Name, string(tk.Role), tk.Prefix, fmtTime(tk.CreatedAt), fmtTimePtr(tk.LastUsedAt))
		}, "ID", "NAME", "ROLE", "PREFIX", "CREATED", "LAST USED")
	}
	return cmd
}

func tokensCreateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create --name NAME --role ROLE",
		Short: "Create an API token and print its secret, once",
		Long: `Create an API token. Its secret is printed once and cannot be read again:
the server keeps only a hash of it.

Roles: viewer reads; operator also acts (switchover, maintenance); admin also
configures and manages tokens.`,
		Args: positional(),
	}
	var name string
	role := newEnumFlag(string(client.Viewer), string(client.Operator), string(client.Admin))
	cmd.Flags().StringVar(&name, "name", "", "token name, e.g. the tool or person using it")
	cmd.Flags().Var(role, "role", "role of the token")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("role")
	idem := addIdempotencyFlag(a, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		body := client.TokenCreate{Name: name, Role: client.Role(role.value)}
		key, err := idem.value(cmd, "createToken"+"", body)
		if err != nil {
			return err
		}
		resp, err := a.api.CreateTokenWithResponse(cmd.Context(), &client.CreateTokenParams{IdempotencyKey: &key}, body)
		if err := idem.settle(a.check(resp, err, http.StatusCreated), key); err != nil {
			return err
		}
		a.noteReplay(resp.HTTPResponse)
		if a.jsonOutput() {
			fmt.Fprintln(a.stderr, "warning: the secret is shown only in this answer; it will not be shown again")
			return a.printJSON(resp.Body)
		}
		tk := resp.JSON201
		w := a.stdout
		fmt.Fprintf(w, "Token %s created.\n", tk.Name)
		if err := printFields(w,
			field{"ID", tk.Id.String()},
			field{"Role", string(tk.Role)},
			field{"Prefix", tk.Prefix},
		); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nSECRET:\n\n    %s\n\n", shownSecret(tk.Secret))
		fmt.Fprintln(w, "WARNING: store this secret now: it will not be shown again.")
		fmt.Fprintln(w, "Use it as --token or "+envToken+".")
		return nil
	}
	return cmd
}

func tokensDeleteCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete TOKEN",
		Aliases: []string{"rm", "revoke"},
		Short:   "Revoke an API token at once",
		Long:    "Revoke an API token at once. Revoking the last admin token is refused (409).",
		Args:    positional("TOKEN"),
	}
	yes := addYesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := resolve(cmd.Context(), "token", args[0], a.tokenNames)
		if err != nil {
			return err
		}
		if err := a.confirm(*yes, "Revoke API token "+args[0]+": every client using it is refused from now on."); err != nil {
			return err
		}
		resp, err := a.api.DeleteTokenWithResponse(cmd.Context(), id, &client.DeleteTokenParams{})
		if err := a.check(resp, err, http.StatusNoContent); err != nil {
			return err
		}
		return a.deleted("token %s revoked", id)
	}
	return cmd
}

func tokensGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get TOKEN",
		Short: "Show an API token (never its secret)",
		Args:  positional("TOKEN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := resolve(cmd.Context(), "token", args[0], a.tokenNames)
			if err != nil {
				return err
			}
			resp, err := a.api.GetTokenWithResponse(cmd.Context(), id)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			tk := resp.JSON200
			return printFields(a.stdout,
				field{"ID", tk.Id.String()},
				field{"Name", tk.Name},
				field{"Role", string(tk.Role)},
				field{"Prefix", tk.Prefix},
				field{"Created", fmtTime(tk.CreatedAt)},
				field{"Last used", fmtTimePtr(tk.LastUsedAt)},
				field{"ETag", resp.HTTPResponse.Header.Get("ETag")},
			)
		},
	}
}

func tokensReissueCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reissue TOKEN",
		Short: "Give an API token a new secret; the old one stops working at once",
		Args:  positional("TOKEN"),
	}
	match := addIfMatchFlag(cmd)
	yes := addYesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := resolve(cmd.Context(), "token", args[0], a.tokenNames)
		if err != nil {
			return err
		}
		if err := a.confirm(*yes, "Re-issue API token "+args[0]+": its current secret stops working at once; clients need the new one."); err != nil {
			return err
		}
		key := uuid.NewString()
		resp, err := a.api.ReissueTokenWithResponse(cmd.Context(), id, &client.ReissueTokenParams{IfMatch: ifMatch(cmd, match), IdempotencyKey: &key})
		if err := a.check(resp, err, http.StatusOK); err != nil {
			return err
		}
		if a.jsonOutput() {
			fmt.Fprintln(a.stderr, "warning: the secret is shown only in this answer; it will not be shown again")
			return a.printJSON(resp.Body)
		}
		tk := resp.JSON200
		fmt.Fprintf(a.stdout, "Token %s has a new secret (prefix %s).\n\nSECRET:\n\n    %s\n\n", tk.Name, tk.Prefix, shownSecret(tk.Secret))
		fmt.Fprintln(a.stdout, "WARNING: store this secret now: it will not be shown again.")
		return nil
	}
	return cmd
}
