package store

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/backstop-ha/backstop"
)

// decodeJSON gives what encoding/json.Unmarshal gives, value and
// error-or-not, for what the store reads (PostgreSQL's jsonb text:
// spaces after ':' and ',', keys reordered) and for documents built to
// tell decoders apart: keys in another case, duplicate keys, escapes,
// numbers an int cannot hold, nulls, wrong types.
func TestDecodeJSONIsEncodingJSON(t *testing.T) {
	docs := []string{
		`{"node_id": "01a25397-7ec7-7d04-aa9f-bc7501aff28b"}`,
		`{"from": "pending", "n": 3, "ok": true, "x": null, "list": [1, 2.5, "a", {"b": []}]}`,
		`{"os": "linux", "arch": "amd64", "hostname": "mx", "agent_version": "test", "interfaces": [{"mac": "02:00:00:00:00:01", "name": "eth0", "addresses": ["198.18.0.1/24"]}]}`,
		`{"lease_ttl_ms": 1000, "server_grace_ms": 250, "deep_check_interval_ms": 5000, "heartbeat_interval_ms": 250, "quick_check_interval_ms": 500}`,
		`[{"name": "vip", "kind": "ip", "params": {"address": "198.18.1.50/24", "interface": "eth0"}, "depends_on": []}, {"name": "spool", "kind": "volume", "params": {"n": 1e3}, "depends_on": ["vip"]}]`,
		`{"OS": "linux", "Hostname": "MX", "LEASE_TTL_MS": 5}`,
		`{"a": "1", "a": "2", "os": "x", "os": "y"}`,
		`{"s": "caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n", "os": "\u0000"}`,
		`{"lease_ttl_ms": 1.5}`, `{"lease_ttl_ms": 1e400}`, `{"lease_ttl_ms": 99999999999999999999}`, `{"lease_ttl_ms": "1000"}`,
		`{"os": 1}`, `{"interfaces": {}}`, `{"interfaces": null}`, `null`, `{}`, `[]`, `""`, `1`, `true`,
		`{"n": 12345678901234567890, "f": -0.0, "e": 1E-7}`,
	}
	targets := []func() any{
		func() any { return new(map[string]string) },
		func() any { return new(map[string]any) },
		func() any { return new(any) },
		func() any { return new(backstop.HostFacts) },
		func() any { return new(*backstop.HostFacts) },
		func() any { return new(backstop.Timing) },
		func() any { return new([]backstop.Resource) },
		func() any { return new(backstop.Event) },
	}
	for _, doc := range docs {
		for _, mk := range targets {
			want, got := mk(), mk()
			werr := json.Unmarshal([]byte(doc), want)
			gerr := decodeJSON([]byte(doc), got)
			if (werr == nil) != (gerr == nil) {
				t.Errorf("%s into %T: encoding/json %v, decodeJSON %v", doc, want, werr, gerr)
				continue
			}
			if werr == nil && !reflect.DeepEqual(want, got) {
				t.Errorf("%s into %T:\nencoding/json %#v\ndecodeJSON    %#v", doc, want, reflect.ValueOf(want).Elem(), reflect.ValueOf(got).Elem())
			}
		}
	}
}
