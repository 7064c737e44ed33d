package server

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/openapi/api"
)

// The fast answers are the generated ones, byte for byte and header for
// header, for values filled at random: every optional field set or not,
// slices nil, empty or not, maps with several keys, strings that need
// escaping (HTML, U+2028, control characters), times
// with and without nanoseconds and zones, floats that print in either
// notation.
func TestFastEncodingIsTheGeneratedEncoding(t *testing.T) {
	type visit func(http.ResponseWriter) error
	cases := []struct {
		name string
		fill func(f *filler) (generated, fast visit)
	}{
		{"listClusters", func(f *filler) (visit, visit) {
			var v api.ListClusters200JSONResponse
			f.fill(reflect.ValueOf(&v).Elem(), 0)
			return v.VisitListClustersResponse, listClustersJSON(v).VisitListClustersResponse
		}},
		{"getCluster", func(f *filler) (visit, visit) {
			var v api.GetCluster200JSONResponse
			f.fill(reflect.ValueOf(&v).Elem(), 0)
			return v.VisitGetClusterResponse, getClusterJSON(v).VisitGetClusterResponse
		}},
		{"listNodes", func(f *filler) (visit, visit) {
			var v api.ListNodes200JSONResponse
			f.fill(reflect.ValueOf(&v).Elem(), 0)
			return v.VisitListNodesResponse, listNodesJSON(v).VisitListNodesResponse
		}},
		{"listHierarchies", func(f *filler) (visit, visit) {
			var v api.ListHierarchies200JSONResponse
			f.fill(reflect.ValueOf(&v).Elem(), 0)
			return v.VisitListHierarchiesResponse, listHierarchiesJSON(v).VisitListHierarchiesResponse
		}},
		{"listEvents", func(f *filler) (visit, visit) {
			var v api.ListEvents200JSONResponse
			f.fill(reflect.ValueOf(&v).Elem(), 0)
			return v.VisitListEventsResponse, listEventsJSON(v).VisitListEventsResponse
		}},
	}
	for _, c := range cases {
		for seed := range 200 {
			f := &filler{r: rand.New(rand.NewPCG(uint64(seed), 7)), zero: seed == 0}
			gen, fast := c.fill(f)
			gw, fw := httptest.NewRecorder(), httptest.NewRecorder()
			gerr, ferr := gen(gw), fast(fw)
			if (gerr == nil) != (ferr == nil) {
				t.Fatalf("%s seed %d: generated %v, fast %v", c.name, seed, gerr, ferr)
			}
			if gerr != nil {
				continue
			}
			if gw.Code != fw.Code || !reflect.DeepEqual(gw.Header(), fw.Header()) || gw.Body.String() != fw.Body.String() {
				t.Fatalf("%s seed %d:\ngenerated %d %v\n%s\nfast      %d %v\n%s", c.name, seed, gw.Code, gw.Header(), gw.Body, fw.Code, fw.Header(), fw.Body)
			}
		}
	}
}

// filler sets a value's fields at random (or leaves them zero). Its
// strings are valid UTF-8: what these answers show comes from
// PostgreSQL, which stores no other (both encoders write invalid UTF-8
// as U+FFFD, encoding/json as the escape \ufffd, v2 as the character).
type filler struct {
	r    *rand.Rand
	zero bool
}

var tricky = []string{"", "mx1", "<b>&amp;</b>", "line\nbreak\ttab\x01", "\u2028\u2029", "caf\u00e9 \U0001F600", `"quoted" \ back\slash /`, "0195f7a4-0000-7000-8000-000000000001"}

func (f *filler) fill(v reflect.Value, depth int) {
	if f.zero || depth > 8 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if f.r.IntN(4) == 0 {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		f.fill(v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			ts := []time.Time{
				time.Date(2026, 12, 8, 3, 4, 5, 0, time.UTC),
				time.Date(2026, 12, 8, 3, 4, 5, 123456789, time.UTC),
				time.Date(2026, 12, 8, 3, 4, 5, 120000000, time.FixedZone("x", 3600+1800)),
				{},
			}
			v.Set(reflect.ValueOf(ts[f.r.IntN(len(ts))]))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				f.fill(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		switch f.r.IntN(4) {
		case 0:
			return
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		n := 1 + f.r.IntN(3)
		v.Set(reflect.MakeSlice(v.Type(), n, n))
		for i := range n {
			f.fill(v.Index(i), depth+1)
		}
	case reflect.Array:
		for i := range v.Len() {
			f.fill(v.Index(i), depth+1)
		}
	case reflect.Map:
		if f.r.IntN(4) == 0 {
			return
		}
		v.Set(reflect.MakeMap(v.Type()))
		for range f.r.IntN(4) {
			k := reflect.New(v.Type().Key()).Elem()
			f.fill(k, depth+1)
			e := reflect.New(v.Type().Elem()).Elem()
			f.fill(e, depth+1)
			v.SetMapIndex(k, e)
		}
	case reflect.Interface:
		vals := []any{nil, "s<>", 1.0, 1e21, 1e-7, -0.5, true, []any{"a", 2.0}, map[string]any{"z": 1.0, "a": "<"}}
		if x := vals[f.r.IntN(len(vals))]; x != nil {
			v.Set(reflect.ValueOf(x))
		}
	case reflect.String:
		v.SetString(tricky[f.r.IntN(len(tricky))])
	case reflect.Bool:
		v.SetBool(f.r.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt([]int64{0, 1, -7, math.MaxInt32, 1 << 53}[f.r.IntN(5)] % (1 << (v.Type().Bits() - 1)))
	case reflect.Uint8:
		v.SetUint(uint64(f.r.IntN(256)))
	case reflect.Float32, reflect.Float64:
		v.SetFloat([]float64{0, 0.2, 0.35, 1e21, 1e-7, 123456.789, float64(float32(0.3))}[f.r.IntN(7)])
	}
}

// fastAnswers swaps the generated answers of the mix for the fast ones
// and leaves every other answer, and errors, as they are.
func TestFastAnswersSwapsTheMix(t *testing.T) {
	for _, c := range []struct{ in, want any }{
		{api.ListClusters200JSONResponse{}, listClustersJSON{}},
		{api.GetCluster200JSONResponse{}, getClusterJSON{}},
		{api.ListNodes200JSONResponse{}, listNodesJSON{}},
		{api.ListHierarchies200JSONResponse{}, listHierarchiesJSON{}},
		{api.ListEvents200JSONResponse{}, listEventsJSON{}},
		{api.GetNode200JSONResponse{}, api.GetNode200JSONResponse{}},
		{nil, nil},
	} {
		h := fastAnswers(func(context.Context, http.ResponseWriter, *http.Request, any) (any, error) { return c.in, nil }, "op")
		got, err := h(t.Context(), nil, nil, nil)
		if err != nil || reflect.TypeOf(got) != reflect.TypeOf(c.want) {
			t.Errorf("%T became %T (%v), want %T", c.in, got, err, c.want)
		}
	}
}
