package server

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/backstop-ha/backstop/openapi"
)

// The contract router answers every request as gorillamux does: the
// same operation and path parameters, or the same error (404 or 405). The
// requests are every template of the contract with each method and with
// parameter values built to tell routers apart: another template's
// static segment ("from-template", "stream", "rotate", ...), encoded
// slashes and characters, empty segments, trailing and doubled slashes.
func TestContractRouterMatchesGorillaMux(t *testing.T) {
	doc, err := openapi.Load()
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = nil
	fast, err := newContractRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	statics := map[string]bool{}
	for _, path := range doc.Paths.InMatchingOrder() {
		for _, seg := range regexp.MustCompile(`[^/{}]+`).FindAllString(param.ReplaceAllString(path, ""), -1) {
			statics[seg] = true
		}
	}
	values := []string{"0195f7a4-0000-7000-8000-000000000001", "x", "x%2Fy", "%41b", "a.b", "-", "~", "x%20y"}
	for s := range statics {
		values = append(values, s)
	}
	var paths []string
	for _, tmpl := range doc.Paths.InMatchingOrder() {
		for _, v := range values {
			p := param.ReplaceAllString(tmpl, v)
			paths = append(paths, p, p+"/", p+"//x", "/x"+p)
		}
		paths = append(paths, param.ReplaceAllString(tmpl, ""))
	}
	paths = append(paths, "/", "//", "/v1", "/v1/", "/v1//clusters", "/agent", "/nope")
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, "PROPFIND"}
	matched := 0
	for _, path := range paths {
		for _, m := range methods {
			r := httptest.NewRequest(m, "http://backstop"+path, nil)
			gr, gp, gerr := slow.FindRoute(r)
			fr, fp, ferr := fast.FindRoute(r)
			if gerr != nil || ferr != nil {
				if !sameRouteError(gerr, ferr) {
					t.Errorf("%s %s: gorillamux %v, contract router %v", m, path, gerr, ferr)
				}
				continue
			}
			matched++
			if gr.Path != fr.Path || gr.Method != fr.Method || gr.Operation != fr.Operation || gr.PathItem != fr.PathItem || !maps.Equal(gp, fp) {
				t.Errorf("%s %s: gorillamux %s %s %v, contract router %s %s %v", m, path, gr.Method, gr.Path, gp, fr.Method, fr.Path, fp)
			}
		}
	}
	if matched < 100 {
		t.Fatalf("only %d requests matched an operation: the test does not test", matched)
	}
}

func sameRouteError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || (a != routers.ErrMethodNotAllowed && b != routers.ErrMethodNotAllowed)
}
