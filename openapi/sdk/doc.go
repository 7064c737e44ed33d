// Package sdk holds the client SDKs generated from the contract
// (openapi/backstop.yaml) besides the Go client (openapi/client): the
// TypeScript SDK in ts/ (openapi-typescript types with an openapi-fetch
// client). Its test runs the TypeScript SDK's own test against a live
// backstopd with real agents, on real PostgreSQL.
package sdk
