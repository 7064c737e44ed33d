package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
)

// Shell completion (backstopctl completion bash|zsh|fish|powershell, from
// cobra) completes object names from the server: a command's positional
// arguments are read from its Use line (CLUSTER, NODE, HIERARCHY, ...),
// and the flags that name nodes, hierarchies or clusters complete too.
// Completion asks the server with the same --server and --token (or
// environment) as the command would; when it cannot, it offers nothing.

// argCompleters complete one kind of argument; args are the positional
// arguments before it (args[0] is the cluster for cluster children).
var argCompleters = map[string]func(a *app, ctx context.Context, args []string) ([]named, error){
	"CLUSTER": func(a *app, ctx context.Context, _ []string) ([]named, error) { return a.clusterNames(ctx) },
	"NODE": func(a *app, ctx context.Context, args []string) ([]named, error) {
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return nil, err
		}
		return a.nodeNames(ctx, cid)
	},
	"HIERARCHY": func(a *app, ctx context.Context, args []string) ([]named, error) {
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return nil, err
		}
		return a.hierarchyNames(ctx, cid)
	},
	"WEBHOOK": func(a *app, ctx context.Context, _ []string) ([]named, error) { return a.webhookNames(ctx) },
	"TARGET":  func(a *app, ctx context.Context, _ []string) ([]named, error) { return a.snmpTargetNames(ctx) },
	"TOKEN":   func(a *app, ctx context.Context, _ []string) ([]named, error) { return a.tokenNames(ctx) },
}

// flagKinds maps flags that name objects to the kind they name.
var flagKinds = map[string]string{
	"to": "NODE", "node": "NODE", "fail-node": "NODE",
	"fail-resource": "HIERARCHY", "cluster": "CLUSTER",
}

// addCompletion sets the completion of cmd's arguments and flags.
func (a *app) addCompletion(cmd *cobra.Command) {
	var kinds []string
	for _, w := range strings.Fields(cmd.Use)[1:] {
		w = strings.Trim(w, "[]") // an optional argument: [CLUSTER]
		if w == "" || w != strings.ToUpper(w) || strings.HasPrefix(w, "-") {
			break
		}
		kinds = append(kinds, w)
	}
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= len(kinds) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.complete(cmd, kinds[len(args)], args, prefix)
	}
	for flag, kind := range flagKinds {
		if cmd.Flags().Lookup(flag) == nil {
			continue
		}
		_ = cmd.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			if kind != "CLUSTER" && len(args) == 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return a.complete(cmd, kind, args, prefix)
		})
	}
}

func (a *app) complete(cmd *cobra.Command, kind string, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	fn := argCompleters[kind]
	if fn == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	a.quietServerNote = true
	if err := a.setup(cmd); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	items, err := fn(a, cmd.Context(), args)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []string
	for _, it := range items {
		if it.name != "" && strings.HasPrefix(it.name, prefix) {
			out = append(out, it.name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
