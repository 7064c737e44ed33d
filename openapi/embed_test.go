package openapi

import (
	"net/http"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestDocumented checks the contract is valid and that every operation and
// schema carries the description and example users read.
func TestDocumented(t *testing.T) {
	doc, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || op.Description == "" || op.Summary == "" {
				t.Errorf("%s %s: operationId, summary and description are required", method, path)
			}
			if _, ok := op.Extensions["x-backstop-role"]; !ok {
				t.Errorf("%s %s: no x-backstop-role", method, path)
			}
			if op.RequestBody != nil {
				for ct, mt := range op.RequestBody.Value.Content {
					if mt.Example == nil && len(mt.Examples) == 0 {
						t.Errorf("%s %s: request body %s has no example", method, path, ct)
					}
				}
			}
		}
	}
	for name, s := range doc.Components.Schemas {
		if s.Value.Description == "" {
			t.Errorf("schema %s has no description", name)
		}
		if s.Value.Example == nil {
			t.Errorf("schema %s has no example", name)
		}
	}
}

// TestErrorsDeclared checks that every operation declares, by code, the
// client errors the server's request gate can answer for it, so that
// generated clients type them (a status only the default response covers
// is untyped in most generators). What handlers answer beyond these (404
// for an unknown id in the body, 409, ...) is checked where it happens:
// the e2e tests validate every answer against the operation's declared
// statuses.
func TestErrorsDeclared(t *testing.T) {
	doc, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			role, _ := op.Extensions["x-backstop-role"].(string)
			want := []int{400} // a bad parameter, or a body where none is taken
			if role != "public" {
				want = append(want, 401)
			}
			if role == "operator" || role == "admin" {
				want = append(want, 403)
			}
			params := append(append(openapi3.Parameters{}, item.Parameters...), op.Parameters...)
			for _, p := range params {
				switch {
				case p.Value.In == "path":
					want = append(want, 404)
				case p.Value.In == "header" && p.Value.Name == "If-Match":
					want = append(want, 412)
				case p.Value.In == "query" && p.Value.Name == "cursor":
					want = append(want, 422) // a cursor this server did not issue
				}
			}
			if op.RequestBody != nil {
				want = append(want, 413, 415, 422)
			}
			if method == http.MethodPost && role != "public" && role != "agent" {
				want = append(want, 409, 422) // Idempotency-Key still in use, or reused with another body
			}
			for _, code := range want {
				r := op.Responses.Status(code)
				if r == nil {
					t.Errorf("%s %s (%s): status %d is not declared", method, path, op.OperationID, code)
					continue
				}
				if r.Value.Content.Get("application/problem+json") == nil {
					t.Errorf("%s %s (%s): status %d is not application/problem+json", method, path, op.OperationID, code)
				}
			}
			if op.Responses.Default() == nil {
				t.Errorf("%s %s (%s): no default response (5xx)", method, path, op.OperationID)
			}
		}
	}
}
