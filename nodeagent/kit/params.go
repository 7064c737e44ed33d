package kit

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"

	"github.com/backstop-ha/backstop"
)

// params reads a resource's parameters as decoded from JSON (strings,
// float64 numbers, []any lists, map[string]any objects). The server has
// validated them already (backstop.Hierarchy.Normalize), but the agent
// checks again so that a kit never runs with a half-understood resource.
type params struct {
	r backstop.Resource
}

func (p params) errorf(name, format string, a ...any) error {
	return fmt.Errorf("resource %q (%s): parameter %s: %s", p.r.Name, p.r.Kind, name, fmt.Sprintf(format, a...))
}

// str returns a string parameter; "" when absent and not required.
func (p params) str(name string, required bool) (string, error) {
	v, ok := p.r.Params[name]
	if !ok || v == nil {
		if required {
			return "", p.errorf(name, "required")
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", p.errorf(name, "must be a string, not %T", v)
	}
	if required && s == "" {
		return "", p.errorf(name, "must not be empty")
	}
	return s, nil
}

// integer returns an integer parameter, def when absent.
func (p params) integer(name string, def, lo, hi int) (int, error) {
	v, ok := p.r.Params[name]
	if !ok || v == nil {
		return def, nil
	}
	var f float64
	switch n := v.(type) {
	case float64:
		f = n
	case int:
		f = float64(n)
	case int64:
		f = float64(n)
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			return 0, p.errorf(name, "must be an integer")
		}
	case string: // tolerated: hand-written configurations
		var err error
		if f, err = strconv.ParseFloat(n, 64); err != nil {
			return 0, p.errorf(name, "must be an integer, not %q", n)
		}
	default:
		return 0, p.errorf(name, "must be an integer, not %T", v)
	}
	if f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
		return 0, p.errorf(name, "must be an integer between %d and %d, not %v", lo, hi, f)
	}
	return int(f), nil
}

// strList returns a list-of-strings parameter.
func (p params) strList(name string) ([]string, error) {
	v, ok := p.r.Params[name]
	if !ok || v == nil {
		return nil, nil
	}
	switch l := v.(type) {
	case []string:
		return l, nil
	case []any:
		out := make([]string, 0, len(l))
		for i, e := range l {
			s, ok := e.(string)
			if !ok || s == "" {
				return nil, p.errorf(name, "entry %d must be a non-empty string", i)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, p.errorf(name, "must be a list of strings, not %T", v)
}

// strMap returns an object-of-strings parameter. Numbers and booleans are
// accepted and formatted, since OCF parameters are strings in the end.
func (p params) strMap(name string) (map[string]string, error) {
	v, ok := p.r.Params[name]
	if !ok || v == nil {
		return map[string]string{}, nil
	}
	out := map[string]string{}
	switch m := v.(type) {
	case map[string]string:
		for k, s := range m {
			out[k] = s
		}
	case map[string]any:
		for k, e := range m {
			switch x := e.(type) {
			case string:
				out[k] = x
			case float64:
				out[k] = strconv.FormatFloat(x, 'f', -1, 64)
			case bool:
				out[k] = strconv.FormatBool(x)
			default:
				return nil, p.errorf(name, "value of %q must be a string, not %T", k, e)
			}
		}
	default:
		return nil, p.errorf(name, "must be an object of strings, not %T", v)
	}
	return out, nil
}

// logger returns env's logger (already the resource's own), or one that
// discards.
func logger(env Env) *slog.Logger {
	if env.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return env.Log
}
