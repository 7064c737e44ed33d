// Package ui is Backstop's web console: plain HTML, CSS and JavaScript
// modules, embedded in backstopd and served at /ui on the API's origin.
// There is no build step: the files under static/ are what the browser
// runs, so `go build` needs nothing but Go and the console can never
// drift from a generated copy.
//
// The console talks only to the public API with the operator's API token
// (kept in the tab's sessionStorage, sent as a bearer header, never put
// in a URL), follows the cluster's event stream with fetch (EventSource
// cannot send a header), and loads nothing from any other origin: the
// Content-Security-Policy below forbids it.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// csp allows the console's own files and API only: no inline script, no
// other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console's files under Prefix. Unknown files are a
// plain 404; everything is revalidated on each load (no-cache) so that an
// upgraded backstopd never serves a page with stale scripts.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		p := strings.TrimPrefix(r.URL.Path, Prefix)
		if p != "" && (strings.HasSuffix(p, "/") || path.Clean(p) != p) {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + p
		files.ServeHTTP(w, r2)
	})
}
