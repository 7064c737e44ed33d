package server

import (
	"net/http"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"
)

// contractRouter finds the operation of the contract a request is for,
// as kin-openapi's gorillamux router does, in a radix tree instead of a
// list: gorillamux tries the contract's ~60 path templates one after
// another, each a regular expression (~50 µs per request, a quarter of
// the CPU of reading a cluster). The templates go into a chi tree, the
// router the generated handlers use, and a match gives the template,
// keyed to a route built once.
//
// It answers what gorillamux answers: the request's escaped path is
// matched (gorillamux's UseEncodedPath), so path parameters are as
// they were sent; the template is found by the path alone and the
// method picks its operation, or routers.ErrMethodNotAllowed. Whatever
// the tree does not match, and a match with an empty parameter (chi
// allows one, gorillamux does not), is left to gorillamux itself, which
// tells 404 from 405 as before. TestContractRouterMatchesGorillaMux
// holds the two to the same answers for every operation of the contract
// and for paths built to tell them apart.
type contractRouter struct {
	tree *chi.Mux
	// routes are the routes by template and method; shared by requests,
	// which only read them.
	routes map[string]map[string]*routers.Route
	slow   routers.Router
	ctxs   sync.Pool
}

var _ routers.Router = (*contractRouter)(nil)

func newContractRouter(doc *openapi3.T) (*contractRouter, error) {
	slow, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	cr := &contractRouter{tree: chi.NewMux(), routes: map[string]map[string]*routers.Route{}, slow: slow}
	cr.ctxs.New = func() any { return chi.NewRouteContext() }
	nop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, path := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(path)
		byMethod := map[string]*routers.Route{}
		for method, op := range item.Operations() {
			byMethod[method] = &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: op}
		}
		cr.routes[path] = byMethod
		cr.tree.Handle(path, nop) // every method: the path alone finds the template
	}
	return cr, nil
}

// FindRoute implements routers.Router.
func (cr *contractRouter) FindRoute(r *http.Request) (*routers.Route, map[string]string, error) {
	rctx := cr.ctxs.Get().(*chi.Context)
	defer cr.ctxs.Put(rctx)
	rctx.Reset()
	// GET: any method chi knows finds the template (Handle registered
	// them for all); the request's own may be one it does not know.
	template := cr.tree.Find(rctx, http.MethodGet, r.URL.EscapedPath())
	byMethod, ok := cr.routes[template]
	if !ok {
		return cr.slow.FindRoute(r)
	}
	params := make(map[string]string, len(rctx.URLParams.Keys))
	for i, k := range rctx.URLParams.Keys {
		v := rctx.URLParams.Values[i]
		if v == "" {
			return cr.slow.FindRoute(r)
		}
		params[k] = v
	}
	route, ok := byMethod[r.Method]
	if !ok {
		return nil, nil, routers.ErrMethodNotAllowed
	}
	return route, params, nil
}
