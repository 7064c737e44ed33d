package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/server/servertest"
	"github.com/backstop-ha/backstop/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

// chromium finds Debian's Chromium (or $BACKSTOP_CHROMIUM). Outside CI a
// machine without it skips the browser part; in CI (CI=1) that fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("BACKSTOP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("Chromium is missing and CI is set: install Debian's chromium (.ci/run does)")
	}
	t.Skip("Chromium not found (apt-get install chromium, or set BACKSTOP_CHROMIUM): skipping the console's browser tests")
	return ""
}

// shotDir is where the screenshots go: $BACKSTOP_CONSOLE_SHOTS, or the
// test's artifact directory (go test -artifacts keeps it). Never the repo.
func shotDir(t *testing.T) string {
	if d := os.Getenv("BACKSTOP_CONSOLE_SHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// browser is one headless Chromium for the whole test; each tab() is a
// fresh tab with its own sessionStorage (so its own sign-in).
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu      sync.Mutex
	foreign []string // requests to anything but backstopd
	errs    []string // uncaught exceptions and console errors
}

func newBrowser(t *testing.T, base string) *browser {
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	b := &browser{t: t, ctx: ctx, base: base}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.foreign) > 0 {
			t.Errorf("the console made requests to other origins: %v", b.foreign)
		}
		if len(b.errs) > 0 {
			t.Errorf("the console threw or logged errors: %v", b.errs)
		}
	})
	return b
}

// tab opens a new tab on the console, recording foreign requests and
// script errors.
func (b *browser) tab() context.Context {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			if u := e.Request.URL; !strings.HasPrefix(u, b.base+"/") && !strings.HasPrefix(u, "data:") {
				b.foreign = append(b.foreign, u)
			}
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg = d.Exception.Description
			}
			b.errs = append(b.errs, fmt.Sprintf("%s (%s:%d)", msg, d.URL, d.LineNumber))
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.errs = append(b.errs, "console.error: "+strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			// The browser's own log: CSP violations and the like. Failed
			// requests (the 401 of a bad token) are expected and shown
			// by the page itself.
			if e.Entry.Level == cdplog.EntryLevelError && e.Entry.Source != cdplog.EntrySourceNetwork {
				b.errs = append(b.errs, string(e.Entry.Source)+": "+e.Entry.Text)
			}
		}
	})
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		b.t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		b.t.Fatal(err)
	}
	b.do(ctx, chromedp.Navigate(b.base+"/ui/"))
	return ctx
}

func (b *browser) do(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage: %s", err, b.page(ctx))
	}
}

// wait waits until the JavaScript expression is true (a guard against
// hanging, never a claim about speed).
func (b *browser) wait(ctx context.Context, what, expr string) {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v\npage: %s", what, expr, err, b.page(ctx))
	}
}

func (b *browser) eval(ctx context.Context, expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// click waits for the element and clicks it in one step of the page: the
// live console redraws often, so a node found by one protocol call may be
// gone by the next.
func (b *browser) click(ctx context.Context, sel string) {
	b.t.Helper()
	b.wait(ctx, "clickable "+sel, fmt.Sprintf(`(() => { const el = document.querySelector(%s); if (!el || el.disabled) return false; el.click(); return true })()`, js(sel)))
}

// press focuses the element and presses Enter on it, as a keyboard user.
func (b *browser) press(ctx context.Context, sel string) {
	b.t.Helper()
	b.wait(ctx, "focusable "+sel, fmt.Sprintf(`(() => { const el = document.querySelector(%s); if (!el) return false; el.focus(); return document.activeElement === el })()`, js(sel)))
	b.do(ctx, chromedp.KeyEvent("\r"))
}

func (b *browser) page(ctx context.Context) string {
	v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	return v
}

func (b *browser) shot(ctx context.Context, name string) string {
	b.t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(shotDir(b.t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
	return p
}

func (b *browser) login(ctx context.Context, token string) {
	b.t.Helper()
	b.do(ctx, chromedp.WaitVisible("#token"), chromedp.SendKeys("#token", token), chromedp.Click(`#login button[type=submit]`))
}

func (b *browser) goTo(ctx context.Context, hash string) {
	b.t.Helper()
	b.eval(ctx, fmt.Sprintf(`location.hash = %q; ""`, hash))
}

// js quotes s for a JavaScript expression.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func token(t *testing.T, h *servertest.Harness, name, role string) string {
	t.Helper()
	var tok struct{ Secret string }
	if err := json.Unmarshal(h.Must("POST", "/v1/tokens", map[string]any{"name": name, "role": role}, 201), &tok); err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

// TestConsole drives the console in headless Chromium against a real
// backstopd on PostgreSQL with three real agents on fake kits: sign-in and
// its errors, roles, the live overview through a node crash and the
// failover it causes, a switchover with its confirmation and progress,
// maintenance with drain progress, a failed mark cleared, the hierarchy
// view, incidents, events and what-if. One cluster and one browser serve
// every step, in order; the never-two-copies oracle of the harness is on
// throughout.
func TestConsole(t *testing.T) {
	h := servertest.New(t, servertest.Options{Nodes: 3, Profile: "lan"})
	mailID := h.CreateHierarchy(servertest.HierarchySpec{Name: "mail"})
	h.BringInService("mail", 0)
	h.WaitPlaced("mail", 0)
	viewer := token(t, h, "night-viewer", "viewer")
	operator := token(t, h, "oncall", "operator")
	overview := "#/c/" + h.ClusterID

	// The API parts the console relies on, checked without a browser.
	t.Run("API", func(t *testing.T) {
		resp, err := http.Get(h.URL + "/ui")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `<script type="module" src="app.js">`) {
			t.Fatalf("GET /ui: %d %.200s", resp.StatusCode, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Fatalf("console CSP: %q", csp)
		}
		var me struct{ Name, Role string }
		req, _ := http.NewRequest("GET", h.URL+"/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+viewer)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(resp.Body).Decode(&me); err != nil || resp.StatusCode != 200 || me.Name != "night-viewer" || me.Role != "viewer" {
			t.Fatalf("whoami as the viewer: %d %+v %v", resp.StatusCode, me, err)
		}
		resp.Body.Close()
		// Every node reports its paths with RTT and loss. The first report
		// after a path comes up may have no RTT yet, and steady reports
		// store their telemetry only every server.TelemetryEvery: wait.
		testkit.Eventually(t, 60*time.Second, "every node reporting its 2 paths up with RTT and loss", func() bool {
			var nodes struct {
				Items []struct {
					Agent struct {
						Report *struct {
							Paths []struct {
								State string
								RttMs *float64 `json:"rtt_ms"`
								Loss  *float64
							}
						}
					}
				}
			}
			if json.Unmarshal(h.Must("GET", "/v1/clusters/"+h.ClusterID+"/nodes", nil, 200), &nodes) != nil || len(nodes.Items) != 3 {
				return false
			}
			for _, n := range nodes.Items {
				r := n.Agent.Report
				if r == nil || len(r.Paths) != 2 {
					return false
				}
				for _, p := range r.Paths {
					if p.State != "up" || p.RttMs == nil || p.Loss == nil {
						return false
					}
				}
			}
			return true
		})
	})

	b := newBrowser(t, h.URL)
	// run is t.Run with the browser's failures reported on the subtest.
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(st *testing.T) {
			b.t = st
			defer func() { b.t = t }()
			f(st)
		})
	}

	run("BadToken", func(t *testing.T) {
		ctx := b.tab()
		b.login(ctx, "bsk_not-a-real-token")
		b.wait(ctx, "the sign-in error", `!document.querySelector("#login-error").hidden`)
		if msg := b.eval(ctx, `document.querySelector("#login-error").textContent`); !strings.Contains(msg, "unknown or was revoked") {
			t.Fatalf("sign-in error %q does not carry the problem detail", msg)
		}
		if v := b.eval(ctx, `(sessionStorage.getItem("backstop.token") || "") + location.href`); strings.Contains(v, "bsk_") {
			t.Fatalf("a rejected token was kept or put in the URL: %q", v)
		}
	})

	run("ViewerSeesNoActions", func(t *testing.T) {
		ctx := b.tab()
		b.login(ctx, viewer)
		b.wait(ctx, "the overview", `!!document.querySelector('#hier-table [data-hierarchy="mail"]') && !!document.querySelector('#node-table [data-node="node3"]')`)
		if role := b.eval(ctx, `document.querySelector("#role").textContent`); !strings.Contains(role, "viewer") {
			t.Fatalf("role badge %q", role)
		}
		if v := b.eval(ctx, `location.href + " " + sessionStorage.getItem("backstop.token")`); strings.Count(v, viewer) != 1 || strings.Contains(strings.Fields(v)[0], "bsk_") {
			t.Fatalf("token must be in sessionStorage only: %q", v)
		}
		// On a phone the page does not scroll sideways: wide tables
		// scroll inside their own box.
		b.do(ctx, chromedp.EmulateViewport(390, 844))
		b.wait(ctx, "the overview at phone width", `innerWidth === 390 && document.documentElement.scrollWidth <= innerWidth`)
		b.do(ctx, chromedp.EmulateViewport(1280, 800))
		b.goTo(ctx, overview+"/h/"+mailID)
		b.wait(ctx, "the hierarchy view", `!!document.querySelector("#explain-text")`)
		if n := b.eval(ctx, `String(document.querySelectorAll("button[data-action]").length)`); n != "0" {
			t.Fatalf("a viewer is offered %s actions", n)
		}
	})

	ctx := b.tab()
	// The operator's tab is dark, as a console at 3 a.m. is (the others
	// use the light scheme): the screenshots show it.
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	b.login(ctx, operator)
	b.wait(ctx, "the overview with live updates", `document.querySelector("#live")?.dataset.state === "live" && !!document.querySelector('#hier-table [data-hierarchy="mail"]')`)

	run("OverviewShowsPathsAndPlacement", func(t *testing.T) {
		b.wait(ctx, "mail on node1 and node1's paths with RTT", `document.querySelector('#hier-table [data-hierarchy="mail"] td.node').textContent === "node1" &&
			/→ node2 · [0-9.]+ ms · [0-9]+% loss/.test(document.querySelector('#node-table [data-node="node1"]').textContent)`)
		if v := b.eval(ctx, `document.querySelector("#leader").textContent`); !strings.Contains(v, "term") {
			t.Fatalf("leader strip %q", v)
		}
	})

	run("Switchover", func(t *testing.T) {
		// By keyboard: focus the action and press Enter.
		b.press(ctx, `#hier-table [data-hierarchy="mail"] button[data-action="switchover"]`)
		b.wait(ctx, "the confirmation from simulate", `!!document.querySelector("#sim-line") && !document.querySelector("#confirm").disabled`)
		plan := b.eval(ctx, `document.querySelector("#plan").textContent`)
		for _, want := range []string{"out of service on node1", "in service on node2", "stop svc, vip", "start vip, svc", "would move mail to node2"} {
			if !strings.Contains(plan, want) {
				t.Fatalf("confirmation %q lacks %q", plan, want)
			}
		}
		if p := h.Placement("mail"); p.Node != 0 {
			t.Fatalf("mail moved before the confirmation: %+v", p)
		}
		b.click(ctx, "#confirm")
		b.wait(ctx, "the switchover's end", `!!document.querySelector("#done") || !document.querySelector("#dlg-error").hidden`)
		if e := b.eval(ctx, `document.querySelector("#dlg-error").hidden ? "" : document.querySelector("#dlg-error").textContent`); e != "" {
			t.Fatalf("switchover failed in the console: %s", e)
		}
		progress := b.eval(ctx, `document.querySelector("#progress").textContent`)
		if !strings.Contains(progress, "succeeded") || !strings.Contains(progress, "svc") {
			t.Fatalf("progress %q shows no finished steps", progress)
		}
		b.click(ctx, "#cancel")
		h.WaitPlaced("mail", 1)
		if n := h.ExactlyOneCopy("mail"); n != 1 {
			t.Fatalf("mail on node%d after the switchover, want node2", n+1)
		}
		b.wait(ctx, "the overview to show mail on node2", `document.querySelector('#hier-table [data-hierarchy="mail"] td.node').textContent === "node2"`)
	})

	run("NodeCrashLive", func(t *testing.T) {
		h.CrashNode(1) // node2 runs mail
		b.wait(ctx, "node2 down in the overview", `["down", "fenced"].includes(document.querySelector('#node-table [data-node="node2"] td.state [data-state]').dataset.state)`)
		seen := time.Now()
		alert := b.eval(ctx, `document.querySelector("#alerts").textContent`)
		if !strings.Contains(alert, "Node node2 is down") {
			t.Fatalf("alerts %q do not put node2's crash on top", alert)
		}
		b.shot(ctx, "console-overview-failover.png")
		// How long after the server wrote node.down the console showed it
		// (same host clock); logged, never asserted.
		var evs struct {
			Items []struct {
				Type string
				At   time.Time
			}
		}
		_ = json.Unmarshal(h.Must("GET", "/v1/clusters/"+h.ClusterID+"/events?type=node.down", nil, 200), &evs)
		if len(evs.Items) > 0 {
			t.Logf("node.down written at %s, shown by the console %v later (polled every 50 ms)", evs.Items[0].At.Format(time.RFC3339Nano), seen.Sub(evs.Items[0].At).Round(time.Millisecond))
		}
		h.WaitPlaced("mail", 0)
		h.ExactlyOneCopy("mail")
		b.wait(ctx, "the overview to show mail back in service on node1", `document.querySelector('#hier-table [data-hierarchy="mail"] td.node').textContent === "node1" &&
			document.querySelector('#hier-table [data-hierarchy="mail"] td.state [data-state]').dataset.state === "in_service"`)
	})

	run("HierarchyView", func(t *testing.T) {
		b.click(ctx, `#hier-table [data-hierarchy="mail"] th a`)
		b.wait(ctx, "explain after the failover", `/in service on node1/.test(document.querySelector("#explain-text")?.textContent || "") &&
			/failed over from node2 to node1/.test(document.querySelector("#explain-text").textContent)`)
		text := b.eval(ctx, `document.querySelector("#hierarchy").textContent`)
		for _, want := range []string{"If node1 failed now, it would go to node3", "no: "} {
			if !strings.Contains(text, want) {
				t.Fatalf("hierarchy view lacks %q: %s", want, text)
			}
		}
		b.wait(ctx, "the resource tree with its checks", `/checks pass/.test(document.querySelector('#resource-tree [data-resource="svc"]')?.textContent || "") &&
			!!document.querySelector('#resource-tree [data-resource="svc"] [data-resource="vip"]')`)
		if v := b.eval(ctx, `document.querySelector("#candidates").textContent`); !strings.Contains(v, "node2") || !strings.Contains(v, "down") {
			t.Fatalf("candidates table %q does not say node2 is rejected as down", v)
		}
		b.shot(ctx, "console-hierarchy.png")
	})

	run("Incidents", func(t *testing.T) {
		b.goTo(ctx, overview+"/incidents")
		b.wait(ctx, "the failover incident with its recovery time", `!!document.querySelector('article[data-kind="failover"] .recovery .big') && !!document.querySelector('article[data-kind="switchover"]')`)
		card := b.eval(ctx, `document.querySelector('article[data-kind="failover"]').textContent`)
		for _, want := range []string{"Failover of mail", "node2 → node1", "recovery", "detected", "started"} {
			if !strings.Contains(card, want) {
				t.Fatalf("incident card lacks %q: %s", want, card)
			}
		}
		if n, _ := strconv.Atoi(b.eval(ctx, `String(document.querySelectorAll('article[data-kind="failover"] .timebar .tick').length)`)); n < 3 {
			t.Fatalf("the failover's time bar has %d ticks, want at least detected, decided, started", n)
		}
		b.shot(ctx, "console-incident-timeline.png")
	})

	run("Events", func(t *testing.T) {
		b.goTo(ctx, overview+"/events")
		b.wait(ctx, "the event log", `document.querySelectorAll("#event-list li[data-type]").length > 5`)
		b.eval(ctx, `const s = document.querySelector("#f-severity"); s.value = "critical"; s.dispatchEvent(new Event("change")); ""`)
		b.wait(ctx, "critical events only", `!!document.querySelector('#event-list [data-type="node.down"]') && !document.querySelector('#event-list li.sev-info')`)
		b.do(ctx, chromedp.SendKeys("#f-type", "failover."))
		b.wait(ctx, "failover events only", `[...document.querySelectorAll("#event-list li[data-type]")].every(li => li.dataset.type.startsWith("failover.")) && !!document.querySelector('#event-list [data-type="failover.started"]')`)
	})

	run("WhatIf", func(t *testing.T) {
		b.goTo(ctx, overview+"/whatif")
		b.click(ctx, `input[data-pick="n-node1"]`)
		b.click(ctx, "#simulate")
		b.wait(ctx, "the simulated outcome", `/node3/.test(document.querySelector('#sim-table [data-hierarchy="mail"] td.would')?.textContent || "")`)
		if p := h.Placement("mail"); p.Node != 0 {
			t.Fatalf("a simulation moved mail: %+v", p)
		}
		b.shot(ctx, "console-whatif.png")
	})

	run("MaintenanceDrains", func(t *testing.T) {
		b.goTo(ctx, overview)
		b.click(ctx, `#node-table [data-node="node1"] button[data-action="maintenance-on"]`)
		b.wait(ctx, "the drain plan", `/mail: node1 → node3/.test(document.querySelector("#drain-plan")?.textContent || "") && !document.querySelector("#confirm").disabled`)
		b.click(ctx, "#confirm")
		b.wait(ctx, "the drain to end", `!!document.querySelector("#done") || !document.querySelector("#dlg-error").hidden`)
		if d := b.eval(ctx, `document.querySelector("#drain").textContent + " | " + document.querySelector("#dlg-error").textContent`); !strings.HasPrefix(d, "Drained 1 of 1") {
			t.Fatalf("drain progress %q", d)
		}
		b.click(ctx, "#cancel")
		h.WaitPlaced("mail", 2)
		h.ExactlyOneCopy("mail")
		b.wait(ctx, "node1 in maintenance", `document.querySelector('#node-table [data-node="node1"] td.state [data-state]').dataset.state === "maintenance"`)
		b.click(ctx, `#node-table [data-node="node1"] button[data-action="maintenance-off"]`)
		b.wait(ctx, "the end-of-maintenance plan", `!document.querySelector("#confirm").disabled`)
		b.click(ctx, "#confirm")
		b.wait(ctx, "maintenance to end", `!!document.querySelector("#done")`)
		b.click(ctx, "#cancel")
		b.wait(ctx, "node1 up again", `document.querySelector('#node-table [data-node="node1"] td.state [data-state]').dataset.state === "up"`)
	})

	run("ClearFailedMark", func(t *testing.T) {
		// svc keeps failing on node3 past local recovery: mail fails over
		// to node1 and node3 is marked failed for it.
		h.FailChecks(2, "mail", "svc")
		h.WaitPlaced("mail", 0)
		h.HealChecks(2, "mail", "svc")
		h.ExactlyOneCopy("mail")
		b.goTo(ctx, overview+"/h/"+mailID)
		b.wait(ctx, "the failed mark with its action", `!!document.querySelector('#failed-marks button[data-action="clear-mark"]')`)
		b.click(ctx, `#failed-marks button[data-action="clear-mark"]`)
		b.wait(ctx, "the clear confirmation", `!document.querySelector("#confirm").disabled`)
		b.click(ctx, "#confirm")
		b.wait(ctx, "the mark cleared", `!!document.querySelector("#done")`)
		b.click(ctx, "#cancel")
		b.wait(ctx, "no failed mark left", `!document.querySelector("#failed-marks") && /would go to node3/.test(document.querySelector("#explain-text").textContent)`)
	})

	run("StreamLostIsShown", func(t *testing.T) {
		// The browser goes offline: the live stream breaks and the console
		// says its data may be stale instead of showing it as current;
		// back online, it follows the stream again.
		offline := func(off bool) {
			if _, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
				MatchedNetworkConditions: []*network.Conditions{{Offline: off, DownloadThroughput: -1, UploadThroughput: -1}}}); err != nil {
				t.Fatal(err)
			}
		}
		b.goTo(ctx, overview)
		b.wait(ctx, "live", `document.querySelector("#live").dataset.state === "live"`)
		offline(true)
		defer offline(false)
		b.wait(ctx, "the lost-connection alerts", `document.querySelector("#live").dataset.state !== "live" &&
			/Live updates lost/.test(document.querySelector("#alerts").textContent) && /Cannot refresh:.*cannot reach backstopd/.test(document.querySelector("#alerts").textContent)`)
		offline(false)
		b.wait(ctx, "live again", `document.querySelector("#live").dataset.state === "live" && !/Live updates lost|Cannot refresh/.test(document.querySelector("#alerts").textContent)`)
	})

	run("APIErrorShown", func(t *testing.T) {
		// Revoke the operator's token under the open console: the next
		// call fails and the console says why instead of going blank.
		var list struct{ Items []struct{ ID, Name string } }
		_ = json.Unmarshal(h.Must("GET", "/v1/tokens", nil, 200), &list)
		for _, tk := range list.Items {
			if tk.Name == "oncall" {
				h.Must("DELETE", "/v1/tokens/"+tk.ID, nil, 204)
			}
		}
		b.wait(ctx, "the sign-in form with the reason", `!!document.querySelector("#login-error") && /unknown or was revoked/.test(document.querySelector("#login-error").textContent)`)
	})
}
