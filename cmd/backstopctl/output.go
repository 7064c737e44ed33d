package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// jsonOutput tells whether the API's own document is printed (json or
// yaml) rather than a table.
func (a *app) jsonOutput() bool { return a.opts.output == outputJSON || a.opts.output == outputYAML }

// printJSON writes a JSON body of the API pretty-printed, as it came, or
// as YAML with -o yaml (same fields, same order).
func (a *app) printJSON(body []byte) error {
	if a.opts.output == outputYAML {
		b, err := jsonToYAML(body)
		if err != nil {
			return fmt.Errorf("invalid JSON from server %s: %w", a.opts.server, err)
		}
		_, err = a.stdout.Write(b)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "  "); err != nil {
		return fmt.Errorf("invalid JSON from server %s: %w", a.opts.server, err)
	}
	buf.WriteByte('\n')
	_, err := a.stdout.Write(buf.Bytes())
	return err
}

// jsonToYAML re-encodes a JSON document as YAML. JSON is YAML, so the
// decoder reads it into a node tree that keeps the keys' order; the
// encoder then writes it in block style.
func jsonToYAML(body []byte) ([]byte, error) {
	if !json.Valid(body) {
		return nil, errors.New("not JSON")
	}
	var n yaml.Node
	if err := yaml.Unmarshal(body, &n); err != nil {
		return nil, err
	}
	blockStyle(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockStyle clears the flow style the JSON input gave every mapping and
// sequence, and the double quotes of strings that need none.
func blockStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style &^= yaml.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		cols[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// field is one line of a detail view.
type field struct{ key, value string }

// printFields writes a detail view: one "Key:  value" line per field.
func printFields(w io.Writer, fields ...field) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f.key, cell(f.value))
	}
	return tw.Flush()
}

// cell makes a value safe for one table cell: no tabs, newlines or other
// control characters, and never empty.
func cell(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if s == "" {
		return "-"
	}
	return s
}

// abbrev cuts s to n runes, marking the cut.
func abbrev(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmtTime(*t)
}

// compactJSON renders a value as one line of JSON.
func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// jsonMarshal encodes a value of the client for printJSON.
func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
