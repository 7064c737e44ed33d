package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

// hierarchiesConfigCmd shows the configuration versions a hierarchy's
// files resources captured.
func hierarchiesConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config CLUSTER HIERARCHY [--resource NAME] [--diff] [--version N [--file PATH]]",
		Short: "Show the configuration versions of a hierarchy's files resources, with their diffs",
		Long: `Without --version: the captured versions, by resource, newest first, with
what changed in each (--diff: the unified diffs too). With --resource and
--version: that version's diffs, or with --file PATH the content of one
of its files on standard output, to read or restore it (never for a
secret resource).`,
		Args: positional("CLUSTER", "HIERARCHY"),
	}
	lo := addListFlags(cmd)
	resource := cmd.Flags().String("resource", "", "only this files resource")
	diff := cmd.Flags().Bool("diff", false, "print the unified diffs")
	version := cmd.Flags().Int64("version", 0, "one version (needs --resource)")
	file := cmd.Flags().String("file", "", "with --version: print this file's content")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, hid, err := a.clusterChild(ctx, args, hierarchyKind)
		if err != nil {
			return err
		}
		if *version != 0 || *file != "" {
			if *resource == "" || *version <= 0 {
				return usageErrorf("--version N (N ≥ 1) and --resource NAME go together, and --file needs both")
			}
			resp, err := a.api.GetConfigVersionWithResponse(ctx, cid, hid, *resource, *version)
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if *file != "" {
				return printConfigFile(a.stdout, resp.JSON200, *file)
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			printConfigVersion(a.stdout, *resp.JSON200, a.nodeNamer(ctx, cid), true)
			return nil
		}
		var res *client.Name
		if *resource != "" {
			res = resource
		}
		l, err := fetchAll(ctx, lo, func(ctx context.Context, limit *int, cursor *string) (page[client.ConfigVersion], error) {
			resp, err := a.api.ListConfigVersionsWithResponse(ctx, cid, hid, &client.ListConfigVersionsParams{Resource: res, Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.ConfigVersion, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		names := a.nodeNamer(ctx, cid)
		if *diff && !a.jsonOutput() {
			for _, v := range l.items {
				printConfigVersion(a.stdout, v, names, true)
			}
			return nil
		}
		return printList(a, l, func(t *table, v client.ConfigVersion) {
			secret := ""
			if v.Secret {
				secret = "secret"
			}
			t.row(v.Resource, strconv.FormatInt(v.Version, 10), fmtTime(v.CapturedAt), orDash(names.name(v.NodeId)),
				strconv.FormatInt(v.Size, 10), secret, changes(v), v.Sha256[:12])
		}, "RESOURCE", "VERSION", "CAPTURED", "NODE", "BYTES", "", "CHANGES", "SHA256")
	}
	return cmd
}

// changes summarizes what changed in a version: "main.cf modified,
// transport added" (unchanged files left out).
func changes(v client.ConfigVersion) string {
	var out []string
	for _, f := range v.Files {
		if f.Change != client.Unchanged {
			out = append(out, f.Path[strings.LastIndex(f.Path, "/")+1:]+" "+string(f.Change))
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return abbrev(strings.Join(out, ", "), 60)
}

func printConfigVersion(w io.Writer, v client.ConfigVersion, names nodeNamer, diffs bool) {
	secret := ""
	if v.Secret {
		secret = " (secret: contents and diffs are never shown)"
	}
	fmt.Fprintf(w, "%s version %d, captured %s on %s, %d bytes, sha256 %s%s\n", v.Resource, v.Version, fmtTime(v.CapturedAt),
		orDash(names.name(v.NodeId)), v.Size, v.Sha256, secret)
	for _, f := range v.Files {
		line := fmt.Sprintf("  %-9s %s", f.Change, f.Path)
		if f.Sha256 != nil {
			line += " sha256 " + *f.Sha256
		}
		if f.PreviousSha256 != nil && f.Change != client.Unchanged {
			line += " (was " + *f.PreviousSha256 + ")"
		}
		if f.Binary && f.Change != client.Unchanged {
			line += " [checksums only]"
		}
		fmt.Fprintln(w, line)
		if diffs && f.Diff != nil {
			for _, l := range strings.Split(strings.TrimRight(*f.Diff, "\n"), "\n") {
				fmt.Fprintln(w, "    "+l)
			}
		}
	}
}

func printConfigFile(w io.Writer, v *client.ConfigVersion, path string) error {
	for _, f := range v.Files {
		if f.Path != path {
			continue
		}
		if f.Content == nil {
			if v.Secret {
				return fmt.Errorf("%s version %d is secret: its contents are never shown", v.Resource, v.Version)
			}
			return fmt.Errorf("%s is %s in version %d: no content", path, f.Change, v.Version)
		}
		_, err := w.Write(*f.Content)
		return err
	}
	return fmt.Errorf("%s version %d has no file %s", v.Resource, v.Version, path)
}
