package openapi

import (
	"testing"
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
