// Package client is the Go client of the Backstop API, generated from
// openapi/backstop.yaml. Do not edit client.gen.go; change the document and
// run go generate.
package client

//go:generate go tool oapi-codegen -config cfg.yaml ../backstop.yaml
