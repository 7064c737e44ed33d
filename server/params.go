package server

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"

	"github.com/backstop-ha/backstop"
)

// maxIdempotencyKey is the longest Idempotency-Key, in characters, as the
// contract's IdempotencyKey parameter declares it.
const maxIdempotencyKey = 255

// checkParameters refuses, before the request is checked against the
// contract, what the contract cannot express and the store cannot hold:
//
//   - a query string that does not decode (a malformed percent-escape);
//   - a parameter the operation declares as one value, given twice;
//   - a query, path or header parameter that is not valid UTF-8 or holds
//     a NUL character (PostgreSQL stores neither);
//   - an Idempotency-Key that is not valid UTF-8 or is longer than 255
//     characters, on every POST: the gate honours the key on every POST,
//     whether its operation declares the header or not.
//
// It is the one place every string parameter is checked, so that no
// handler and no store method has to. Each error names the parameter as
// "<in>.<name>".
func checkParameters(r *http.Request, route *routers.Route, pathParams map[string]string) []backstop.FieldError {
	var out []backstop.FieldError
	add := func(loc, format string, args ...any) {
		out = append(out, backstop.FieldError{Location: loc, Message: fmt.Sprintf(format, args...)})
	}
	declared := map[string]*openapi3.Parameter{}
	for _, ps := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
		for _, p := range ps {
			if p != nil && p.Value != nil {
				declared[p.Value.In+"."+p.Value.Name] = p.Value
			}
		}
	}

	seen := map[string]int{}
	if r.URL.RawQuery != "" {
		for _, pair := range strings.Split(r.URL.RawQuery, "&") {
			if pair == "" {
				continue
			}
			rawKey, rawValue, _ := strings.Cut(pair, "=")
			key, err := url.QueryUnescape(rawKey)
			if err != nil {
				add("query", "a parameter name is not percent-encoded correctly: %v", err)
				continue
			}
			if msg := badText(key); msg != "" {
				add("query", "a parameter name %s", msg)
				continue
			}
			loc := "query." + key
			value, err := url.QueryUnescape(rawValue)
			if err != nil {
				add(loc, "not percent-encoded correctly: %v", err)
				continue
			}
			if msg := badText(value); msg != "" {
				add(loc, "%s", msg)
				continue
			}
			seen[key]++
		}
	}
	for _, key := range slices.Sorted(maps.Keys(seen)) {
		p := declared["query."+key]
		if seen[key] > 1 && p != nil && !isArray(p) {
			add("query."+key, "given %d times; give it once", seen[key])
		}
	}

	for _, name := range slices.Sorted(maps.Keys(pathParams)) {
		if msg := badText(pathParams[name]); msg != "" {
			add("path."+name, "%s", msg)
		}
	}

	headers := []string{}
	for _, p := range declared {
		if p.In == openapi3.ParameterInHeader {
			headers = append(headers, http.CanonicalHeaderKey(p.Name))
		}
	}
	if r.Method == http.MethodPost && !slices.Contains(headers, "Idempotency-Key") {
		headers = append(headers, "Idempotency-Key")
	}
	slices.Sort(headers)
	for _, name := range headers {
		for _, v := range r.Header.Values(name) {
			if msg := badText(v); msg != "" {
				add("header."+name, "%s", msg)
				break
			}
			if name == "Idempotency-Key" && r.Method == http.MethodPost {
				if n := utf8.RuneCountInString(v); n > maxIdempotencyKey {
					add("header."+name, "must be at most %d characters; it has %d", maxIdempotencyKey, n)
					break
				}
			}
		}
	}
	return out
}

// badText says why s cannot be stored as text ("" when it can).
func badText(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsRune(s, 0):
		return "must not contain NUL characters"
	}
	return ""
}

func isArray(p *openapi3.Parameter) bool {
	return p.Schema != nil && p.Schema.Value != nil && p.Schema.Value.Type.Is(openapi3.TypeArray)
}

// waitMargin is what a waiting operation gets, past its longest wait, to
// write its answer.
const waitMargin = 30 * time.Second

// extendWriteDeadline lets an operation that waits (one declaring a
// timeout_s query parameter) outlive the server's write timeout: the
// deadline moves to the contract's longest wait plus a margin, so the
// answer always gets written.
func extendWriteDeadline(w http.ResponseWriter, op *openapi3.Operation) {
	for _, p := range op.Parameters {
		if p == nil || p.Value == nil || p.Value.In != openapi3.ParameterInQuery || p.Value.Name != "timeout_s" {
			continue
		}
		if s := p.Value.Schema; s != nil && s.Value != nil && s.Value.Max != nil {
			longest := time.Duration(*s.Value.Max) * time.Second
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(longest + waitMargin))
		}
	}
}

// instance is a problem's instance: the request's URI as sent, escaped,
// with its query when that is a valid URI query, else the path alone.
func instance(r *http.Request) string {
	inst := r.URL.EscapedPath()
	if q := r.URL.RawQuery; q != "" && validQuery(q) {
		inst += "?" + q
	}
	return inst
}

// validQuery reports whether q is a query as RFC 3986 allows it: pchar,
// "/" and "?", with every "%" starting a two-digit escape.
func validQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		case c == '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
