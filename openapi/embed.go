// Package openapi holds Backstop's API contract, backstop.yaml, the single
// source of truth for the REST API, and BACKSTOP-MIB.txt, the MIB module
// of its SNMP notifications. The generated server side lives in
// openapi/api and the Go client in openapi/client.
package openapi

import (
	_ "embed"
	"fmt"

	"github.com/getkin/kin-openapi/openapi3"
)

// Spec is the contract, as served at GET /openapi.yaml.
//
//go:embed backstop.yaml
var Spec []byte

// MIB is BACKSTOP-MIB, the SNMP notifications' MIB module, as served at
// GET /v1/snmp-mib.
//
//go:embed BACKSTOP-MIB.txt
var MIB []byte

// Load parses and validates the contract.
func Load() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(Spec)
	if err != nil {
		return nil, fmt.Errorf("load openapi document: %w", err)
	}
	if err := doc.Validate(openapi3.NewLoader().Context); err != nil {
		return nil, fmt.Errorf("openapi document is invalid: %w", err)
	}
	return doc, nil
}
