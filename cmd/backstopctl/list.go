package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

// maxPageSize is the largest page the API serves.
const maxPageSize = 500

// listOptions are the flags of every list command.
type listOptions struct {
	limit  int
	cursor string
}

func addListFlags(cmd *cobra.Command) *listOptions {
	o := &listOptions{}
	cmd.Flags().IntVar(&o.limit, "limit", 0, "print at most this many items (default: all, following every page)")
	cmd.Flags().StringVar(&o.cursor, "cursor", "", "start after this cursor (as printed when --limit cut a list short)")
	return o
}

// page is one answer of a list operation.
type page[T any] struct {
	items []T
	next  *string
	body  []byte // the raw JSON of the page
}

// listing is the items of one or more pages.
type listing[T any] struct {
	items []T
	raw   []json.RawMessage // each item's JSON as the server sent it
	next  string            // set when --limit stopped before the end
}

// fetchFunc fetches one page of a list operation.
type fetchFunc[T any] func(ctx context.Context, limit *int, cursor *string) (page[T], error)

// fetchAll follows next_cursor from page to page until the list ends or
// o.limit items were read.
func fetchAll[T any](ctx context.Context, o *listOptions, fetch fetchFunc[T]) (listing[T], error) {
	out := listing[T]{raw: []json.RawMessage{}}
	if o.limit < 0 {
		return out, usageErrorf("--limit must not be negative")
	}
	cursor := o.cursor
	seen := map[string]bool{}
	for {
		size := maxPageSize
		if o.limit > 0 {
			size = min(o.limit-len(out.items), maxPageSize)
		}
		var cp *string
		if cursor != "" {
			cp = &cursor
		}
		p, err := fetch(ctx, &size, cp)
		if err != nil {
			return out, err
		}
		var rawPage struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(p.body, &rawPage); err != nil || len(rawPage.Items) != len(p.items) {
			return out, fmt.Errorf("invalid list page from server")
		}
		take := len(p.items)
		if o.limit > 0 {
			take = min(take, o.limit-len(out.items))
		}
		out.items = append(out.items, p.items[:take]...)
		out.raw = append(out.raw, rawPage.Items[:take]...)

		next := ""
		if p.next != nil {
			next = *p.next
		}
		switch {
		case next == "":
			return out, nil
		case o.limit > 0 && len(out.items) >= o.limit:
			if take == len(p.items) { // a cursor is only good after a whole page
				out.next = next
			}
			return out, nil
		case len(p.items) == 0:
			return out, fmt.Errorf("server sent an empty page with a next_cursor")
		case seen[next]:
			return out, fmt.Errorf("server sent next_cursor %q twice", next)
		}
		seen[next] = true
		cursor = next
	}
}

// printList prints a listing: its items' JSON, or a table made by render.
// When --limit cut the list short, the cursor to go on with is shown.
func printList[T any](a *app, l listing[T], render func(t *table, item T), headers ...string) error {
	if a.jsonOutput() {
		doc := struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor,omitempty"`
		}{l.raw, l.next}
		b, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		return a.printJSON(b)
	}
	t := newTable(a.stdout, headers...)
	for _, it := range l.items {
		render(t, it)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if l.next != "" {
		fmt.Fprintf(a.stderr, "more items follow: add --cursor %s to go on\n", l.next)
	}
	return nil
}
