# Backstop: the two commands README.md promises, and their parts.
GO ?= go
GEN := openapi/api/api.gen.go openapi/client/client.gen.go

.PHONY: demo test vet fmt-check generate generate-check sdk-check build bench bench-scale clean

## demo: a cluster that fails over while you watch: as root three nodes in
## network namespaces protecting Postfix behind a virtual IP, without root
## agents on loopback protecting a TCP service (Ctrl-C removes everything)
demo:
	$(GO) run ./e2e/cmd/demo

## test: vet, formatting, generated-code drift (Go and TypeScript), then every test with -race
test: vet fmt-check generate-check sdk-check contract-lint
	$(GO) test -race -count=1 -timeout 20m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

generate:
	$(GO) generate ./...

## generate-check: regenerating from openapi/backstop.yaml must change
## nothing, and go.mod must be tidy. Works on a dirty tree too: it compares
## the generated files before and after, not against git.
generate-check:
	@before=$$(cat $(GEN) | sha256sum); \
	$(GO) generate ./... || exit 1; \
	after=$$(cat $(GEN) | sha256sum); \
	if [ "$$before" != "$$after" ]; then \
		echo "generated code was stale: go generate ./... updated $(GEN); commit the result"; exit 1; fi
	$(GO) mod tidy -diff

## sdk-check: the TypeScript SDK's types regenerated from
## openapi/backstop.yaml must equal the committed ones. Needs the SDK's
## dependencies (cd openapi/sdk/ts && npm ci; .ci/run does it); without
## them it says so and, outside CI, passes.
SDK_TS := openapi/sdk/ts
sdk-check:
	@if [ ! -x $(SDK_TS)/node_modules/.bin/openapi-typescript ]; then \
		echo "sdk-check: run npm ci in $(SDK_TS) first"; [ -z "$$CI" ] || exit 1; exit 0; fi; \
	tmp=$$(mktemp --suffix=.d.ts); \
	(cd $(SDK_TS) && node_modules/.bin/openapi-typescript ../../backstop.yaml -o $$tmp >/dev/null) || { rm -f $$tmp; exit 1; }; \
	if ! cmp -s $$tmp $(SDK_TS)/src/schema.d.ts; then rm -f $$tmp; \
		echo "TypeScript SDK is stale: cd $(SDK_TS) && npm run generate; commit src/schema.d.ts"; exit 1; fi; \
	rm -f $$tmp

## contract-lint: openapi/backstop.yaml passes Redocly's recommended
## ruleset and Spectral's spectral:oas with no error (warnings are shown).
## Needs the linters (cd openapi/lint && npm ci; .ci/run does it); without
## them it says so and, outside CI, passes.
LINT := openapi/lint
contract-lint:
	@if [ ! -x $(LINT)/node_modules/.bin/redocly ] || [ ! -x $(LINT)/node_modules/.bin/spectral ]; then \
		echo "contract-lint: run npm ci in $(LINT) first"; [ -z "$$CI" ] || exit 1; exit 0; fi; \
	out=$$(mktemp); \
	if ! (cd $(LINT) && node_modules/.bin/redocly lint ../backstop.yaml --config redocly.yaml --format stylish) >$$out 2>&1; then \
		cat $$out; rm -f $$out; echo "contract-lint: Redocly found errors"; exit 1; fi; \
	grep -E "warning|error" $$out | grep -v -i "deprecation" || true; \
	if ! (cd $(LINT) && node_modules/.bin/spectral lint ../backstop.yaml --ruleset spectral.yaml --fail-severity error) >$$out 2>&1; then \
		cat $$out; rm -f $$out; echo "contract-lint: Spectral found errors"; exit 1; fi; \
	grep -E "warning|error" $$out || true; rm -f $$out; echo "contract-lint: Redocly recommended and Spectral spectral:oas: no errors"

build:
	$(GO) build -o bin/ ./cmd/...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2000x -count 5 ./server/

## bench-scale: the control plane's capacity curve: 250, 1,000, 2,000 and
## 4,000 simulated agents (real protocol) at the lan profile against one
## backstopd and a throwaway PostgreSQL, with operators' GETs at 1,000/s
## and 3 node crashes per point followed to their take-over
## (see e2e/cmd/agentload; SCALE_FLAGS= adds or overrides flags)
bench-scale:
	$(GO) run ./e2e/cmd/agentload --agents 250,1000,2000,4000 --profile lan --api-rate 1000 $(SCALE_FLAGS)

clean:
	rm -rf bin
