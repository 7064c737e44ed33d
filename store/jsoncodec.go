package store

import (
	"encoding/json"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/jackc/pgx/v5/pgtype"
)

// v1Semantics are encoding/json's rules (case-insensitive names, numbers
// in an any as float64, invalid UTF-8 replaced, ...) on the faster
// decoder of encoding/json/v2 (github.com/go-json-experiment/json, the
// module Go's encoding/json/v2 comes from; the same options are what
// Go's own encoding/json runs on under GOEXPERIMENT=jsonv2).
var v1Semantics = jsonv1.DefaultOptionsV1()

// decodeJSON decodes a json or jsonb value read from PostgreSQL, as
// encoding/json.Unmarshal would, ~3-4 times faster. Every read of a
// cluster (timing), a node (facts), an event (subject, details) or a
// hierarchy (resources) decodes JSON: with encoding/json it was ~10% of
// the CPU of an operator's GET. TestDecodeJSONIsEncodingJSON holds the
// two to the same results.
func decodeJSON(data []byte, v any) error { return jsonv2.Unmarshal(data, v, v1Semantics) }

// registerJSONCodecs makes the connection's type map decode json and
// jsonb (and arrays of them) with decodeJSON; encoding stays
// encoding/json's.
func registerJSONCodecs(m *pgtype.Map) {
	js := &pgtype.Type{Name: "json", OID: pgtype.JSONOID, Codec: &pgtype.JSONCodec{Marshal: json.Marshal, Unmarshal: decodeJSON}}
	jsb := &pgtype.Type{Name: "jsonb", OID: pgtype.JSONBOID, Codec: &pgtype.JSONBCodec{Marshal: json.Marshal, Unmarshal: decodeJSON}}
	m.RegisterType(js)
	m.RegisterType(jsb)
	m.RegisterType(&pgtype.Type{Name: "_json", OID: pgtype.JSONArrayOID, Codec: &pgtype.ArrayCodec{ElementType: js}})
	m.RegisterType(&pgtype.Type{Name: "_jsonb", OID: pgtype.JSONBArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsb}})
}
