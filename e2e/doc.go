// Package e2e holds black-box tests of the built Backstop binaries: they
// build cmd/backstopd, run it as a separate process against a throwaway
// PostgreSQL database (pgtemp, or the server named by
// BACKSTOP_TEST_DATABASE_URL), and speak to it only over HTTP, with
// hand-written JSON, checking every response against
// openapi/backstop.yaml. The package has no non-test code; run it with
// `go test ./e2e/`.
package e2e
