package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/backstop-ha/backstop/openapi/client"
)

func newIncidentsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "incidents CLUSTER",
		Aliases: []string{"incident"},
		Short:   "Failovers, switchovers and switchbacks with their timelines, oldest first",
		Args:    positional("CLUSTER"),
	}
	lo := addListFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return err
		}
		l, err := fetchAll(ctx, lo, func(ctx context.Context, limit *int, cursor *string) (page[client.Incident], error) {
			resp, err := a.api.ListIncidentsWithResponse(ctx, cid, &client.ListIncidentsParams{Limit: limit, Cursor: cursor})
			return pageOf(a, resp, err, func() ([]client.Incident, *string) { return resp.JSON200.Items, resp.JSON200.NextCursor })
		})
		if err != nil {
			return err
		}
		if a.jsonOutput() {
			return printList(a, l, nil)
		}
		names := a.nodeNamer(ctx, cid)
		hnames := a.hierarchyNamer(ctx, cid)
		return printList(a, l, func(t *table, in client.Incident) {
			rec := ""
			if in.RecoveryMs != nil {
				rec = fmt.Sprintf("%d ms", *in.RecoveryMs)
			}
			t.row(fmtTime(in.DetectedAt), hnames(in.HierarchyId), string(in.Kind), string(in.State),
				orDash(names.name(in.FromNodeId))+" -> "+orDash(names.name(in.ToNodeId)), rec, timeline(in), abbrev(in.Reason, 50))
		}, "DETECTED", "HIERARCHY", "KIND", "STATE", "MOVE", "RECOVERY", "TIMELINE", "REASON")
	}
	return cmd
}

// timeline renders an incident's steps as offsets from its detection:
// "fenced +0.6s decided +0.01s stopped +0.3s started +0.6s deep-check +2s".
func timeline(in client.Incident) string {
	var parts []string
	add := func(name string, t *time.Time) {
		if t != nil {
			parts = append(parts, fmt.Sprintf("%s +%s", name, t.Sub(in.DetectedAt).Round(time.Millisecond)))
		}
	}
	add("decided", in.DecidedAt)
	add("fenced", in.FencedAt)
	add("stopped", in.StoppedAt)
	add("started", in.StartedAt)
	add("deep-check", in.FirstDeepCheckAt)
	return strings.Join(parts, " ")
}

func (a *app) hierarchyNamer(ctx context.Context, cid uuid.UUID) func(uuid.UUID) string {
	m := map[uuid.UUID]string{}
	if hs, err := a.listHierarchies(ctx, cid); err == nil {
		for _, h := range hs {
			m[h.Id] = h.Name
		}
	}
	return func(id uuid.UUID) string {
		if n, ok := m[id]; ok {
			return n
		}
		return id.String()
	}
}

func newEventsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events CLUSTER",
		Short: "Read the cluster's event log; --follow streams new events live",
		Long: `Read the cluster's event log, oldest first. --follow keeps the stream open
(Server-Sent Events) and prints events as they are written, reconnecting
after the last one seen when the connection drops.`,
		Args: positional("CLUSTER"),
	}
	var follow bool
	var after int64
	var typ string
	var limit int
	sev := newEnumFlag(string(client.Info), string(client.Warning), string(client.Critical))
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "stream new events until interrupted")
	cmd.Flags().Int64Var(&after, "after", 0, "only events with a larger seq")
	cmd.Flags().StringVar(&typ, "type", "", "only events of this type, e.g. node.down")
	cmd.Flags().Var(sev, "severity", "only events of this severity or worse")
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most this many events (default: all; not with --follow)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cid, err := a.cluster(ctx, args[0])
		if err != nil {
			return err
		}
		var sp *client.Severity
		if sev.value != "" {
			s := client.Severity(sev.value)
			sp = &s
		}
		tp := ptrIf(typ != "", typ)
		if follow {
			return a.followEvents(ctx, cid, after, tp, sp, func(ev client.Event, raw []byte) error {
				return a.printEvent(ev, raw)
			})
		}
		printed := 0
		for {
			size := 1000
			resp, err := a.api.ListEventsWithResponse(ctx, cid, &client.ListEventsParams{After: &after, Type: tp, Severity: sp, Limit: &size})
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			var raw struct {
				Items []json.RawMessage `json:"items"`
			}
			_ = json.Unmarshal(resp.Body, &raw)
			for i, ev := range resp.JSON200.Items {
				if limit > 0 && printed >= limit {
					return nil
				}
				var r []byte
				if i < len(raw.Items) {
					r = raw.Items[i]
				}
				if err := a.printEvent(ev, r); err != nil {
					return err
				}
				printed++
			}
			if len(resp.JSON200.Items) < size || resp.JSON200.LastSeq <= after {
				return nil
			}
			after = resp.JSON200.LastSeq
		}
	}
	return cmd
}

// printEvent prints one event: a line in table output, its JSON (one
// document per line, for jq) otherwise.
func (a *app) printEvent(ev client.Event, raw []byte) error {
	if a.jsonOutput() {
		if raw == nil {
			raw, _ = json.Marshal(ev)
		}
		if a.opts.output == outputYAML {
			b, err := jsonToYAML(raw)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "---\n%s", b)
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := a.stdout.Write(buf.Bytes())
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "%6d  %s  %-8s  %-26s  %s\n", ev.Seq, ev.At.Local().Format("2006-01-02 15:04:05.000"), ev.Severity, ev.Type, cell(ev.Message))
	return err
}

// followEvents streams the cluster's events after seq after to fn until
// ctx ends, reconnecting (after the last seq seen) when the stream drops.
func (a *app) followEvents(ctx context.Context, cid uuid.UUID, after int64, typ *string, sev *client.Severity, fn func(client.Event, []byte) error) error {
	last := after
	backoff := 500 * time.Millisecond
	for {
		err := a.streamOnce(ctx, cid, &last, typ, sev, fn)
		if ctx.Err() != nil {
			return nil // interrupted: the normal end of --follow
		}
		var pe *problemError
		if errors.As(err, &pe) && pe.status() < 500 {
			return err // a client error does not heal by retrying
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "stream: %v; reconnecting after seq %d\n", err, last)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// streamOnce reads one connection of the event stream. *last is the seq
// of the last event handed to fn.
func (a *app) streamOnce(ctx context.Context, cid uuid.UUID, last *int64, typ *string, sev *client.Severity, fn func(client.Event, []byte) error) error {
	params := &client.StreamEventsParams{Type: typ, Severity: sev}
	if *last > 0 {
		id := strconv.FormatInt(*last, 10)
		params.LastEventID = &id
	}
	resp, err := a.stream.StreamEvents(ctx, cid, params, func(_ context.Context, r *http.Request) error {
		r.Header.Set("Accept", "text/event-stream, application/problem+json")
		return nil
	})
	if err != nil {
		return a.requestError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		parsed, perr := client.ParseStreamEventsResponse(resp)
		if perr != nil {
			return fmt.Errorf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		return a.responseError(parsed)
	}
	return readSSE(resp.Body, func(id, data string) error {
		if data == "" {
			return nil
		}
		var ev client.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("bad event %q: %w", abbrev(data, 80), err)
		}
		if ev.Seq <= *last {
			return nil // never twice
		}
		if err := fn(ev, []byte(data)); err != nil {
			return err
		}
		*last = ev.Seq
		return nil
	})
}

// readSSE parses a text/event-stream (the WHATWG rules this server's
// stream needs: id and data fields, comments, multi-line data) and calls
// fn once per message.
func readSSE(r io.Reader, fn func(id, data string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data != nil {
				if err := fn(id, strings.Join(data, "\n")); err != nil {
					return err
				}
			}
			data = nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // comment (heartbeat)
		}
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimPrefix(v, " ")
		switch k {
		case "id":
			id = v
		case "data":
			data = append(data, v)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

func newControlPlaneCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "control-plane",
		Short: "The backstopd replicas, which one leads, and its term",
		Args:  positional(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.api.GetControlPlaneWithResponse(cmd.Context())
			if err := a.check(resp, err, http.StatusOK); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(resp.Body)
			}
			cp := resp.JSON200
			fmt.Fprintf(a.stdout, "Leader: %s (term %d, since %s)\n\n", orDash(deref(cp.LeaderId)), cp.Term, fmtTimePtr(cp.LeaderSince))
			t := newTable(a.stdout, "REPLICA", "ADDRESS", "VERSION", "LEADER", "STARTED", "LAST SEEN")
			for _, r := range cp.Replicas {
				t.row(r.Id, r.Address, deref(r.Version), fmt.Sprint(r.Leader), fmtTime(r.StartedAt), fmtTime(r.LastSeenAt))
			}
			return t.flush()
		},
	}
}
