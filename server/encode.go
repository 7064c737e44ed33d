package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/openapi/api"
)

// fastAnswers is a strict-server middleware: the answers of the
// operators' most frequent reads (agentload's --api-rate mix: the
// cluster list, a cluster, its nodes, its hierarchies, its events) go
// out through the types below instead of the generated
// XXX200JSONResponse: the same headers and the same bytes
// (TestFastEncodingIsTheGeneratedEncoding), encoded by
// encoding/json/v2 under encoding/json's rules into a reused buffer.
// The generated code encodes with encoding/json into a new buffer
// grown to the size of the answer: for a 64-node list that was ~30% of
// the read's CPU and 100 KB of garbage. Handlers keep returning the
// generated types.
func fastAnswers(f api.StrictHandlerFunc, _ string) api.StrictHandlerFunc {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		resp, err := f(ctx, w, r, req)
		switch v := resp.(type) {
		case api.ListClusters200JSONResponse:
			return listClustersJSON(v), err
		case api.GetCluster200JSONResponse:
			return getClusterJSON(v), err
		case api.ListNodes200JSONResponse:
			return listNodesJSON(v), err
		case api.ListHierarchies200JSONResponse:
			return listHierarchiesJSON(v), err
		case api.ListEvents200JSONResponse:
			return listEventsJSON(v), err
		}
		return resp, err
	}
}

type (
	listClustersJSON    api.ListClusters200JSONResponse
	getClusterJSON      api.GetCluster200JSONResponse
	listNodesJSON       api.ListNodes200JSONResponse
	listHierarchiesJSON api.ListHierarchies200JSONResponse
	listEventsJSON      api.ListEvents200JSONResponse
)

func (r listClustersJSON) VisitListClustersResponse(w http.ResponseWriter) error {
	return writeJSON(w, http.StatusOK, nil, r)
}

func (r getClusterJSON) VisitGetClusterResponse(w http.ResponseWriter) error {
	return writeJSON(w, http.StatusOK, r.Headers.ETag, r.Body)
}

func (r listNodesJSON) VisitListNodesResponse(w http.ResponseWriter) error {
	return writeJSON(w, http.StatusOK, nil, r)
}

func (r listHierarchiesJSON) VisitListHierarchiesResponse(w http.ResponseWriter) error {
	return writeJSON(w, http.StatusOK, nil, r)
}

func (r listEventsJSON) VisitListEventsResponse(w http.ResponseWriter) error {
	return writeJSON(w, http.StatusOK, nil, r)
}

// v1Rules are encoding/json's rules (HTML-safe escaping, sorted map
// keys, nil slices as null, ...) for encoding/json/v2's encoder, which
// writes ids without allocating (uuid.UUID's MarshalText allocates the
// text of each: a quarter of a node list's allocations).
var v1Rules = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(), jsonv2.WithMarshalers(jsonv2.MarshalToFunc(encodeUUID)))

// encodeUUID writes u as uuid.UUID.MarshalText does, quoted.
func encodeUUID(enc *jsontext.Encoder, u uuid.UUID) error {
	var b [38]byte
	b[0], b[37] = '"', '"'
	hex.Encode(b[1:9], u[0:4])
	b[9] = '-'
	hex.Encode(b[10:14], u[4:6])
	b[14] = '-'
	hex.Encode(b[15:19], u[6:8])
	b[19] = '-'
	hex.Encode(b[20:24], u[8:10])
	b[24] = '-'
	hex.Encode(b[25:37], u[10:])
	return enc.WriteValue(b[:])
}

// maxPooledBuffer bounds the buffers kept for reuse: a rare huge answer
// does not stay allocated.
const maxPooledBuffer = 1 << 20

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeJSON writes what a generated VisitXXXResponse of a JSON response
// writes: Content-Type, the ETag if any, status, then v as
// json.NewEncoder(w).Encode writes it (with a newline). As there, an
// error encoding v is returned before anything is written.
func writeJSON(w http.ResponseWriter, status int, etag *string, v any) error {
	buf := buffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			buf.Reset()
			buffers.Put(buf)
		}
	}()
	if err := jsonv2.MarshalWrite(buf, v, v1Rules); err != nil {
		return err
	}
	buf.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	if etag != nil {
		w.Header().Set("ETag", *etag)
	}
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}
