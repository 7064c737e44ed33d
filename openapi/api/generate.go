// Package api holds the server side generated from openapi/backstop.yaml:
// request and response types, the chi router, the strict server interface
// and the embedded document. Do not edit api.gen.go; change the document
// and run go generate.
package api

//go:generate go tool oapi-codegen -config cfg.yaml ../backstop.yaml
