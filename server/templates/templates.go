// Package templates holds Backstop's hierarchy templates: applications
// protected out of the box (mail, PostgreSQL, nginx). A template is data,
// a YAML file embedded here, not code per application: a versioned list
// of parameters and a hierarchy whose strings name them as {{param}}.
// Expanding it gives an ordinary hierarchy, validated, stored and edited
// like any other; the template is not consulted again.
//
// Expansion rules, applied to every string of the hierarchy:
//   - a string that is exactly "{{p}}" becomes p's value with its type (an
//     integer, a list); when p is optional and not given, the map entry or
//     list item holding it is left out;
//   - "{{p}}" inside a longer string is replaced by p's value as text; a
//     parameter not given there is an error of the template (tested);
//   - a resource with `when: p` is left out unless p is given; resources
//     that depended on it depend on its own dependencies instead.
package templates

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/backstop-ha/backstop"
)

//go:embed *.yaml
var files embed.FS

// Parameter types.
const (
	TypeString  = "string"
	TypeInteger = "integer"
	TypeList    = "list"
	TypeAddress = "address" // an IPv4 or IPv6 address, no prefix length
	TypePath    = "path"    // an absolute path
)

// Parameter is one input of a template.
type Parameter struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Type        string `yaml:"type"`
	Required    bool   `yaml:"required"`
	// Default applies when the parameter is not given; nil: none (the
	// parameter is then optional and its uses are left out).
	Default any `yaml:"default"`
}

// Template is a parameterized hierarchy.
type Template struct {
	Name        string      `yaml:"name"`
	Version     int         `yaml:"version"`
	Title       string      `yaml:"title"`
	Description string      `yaml:"description"`
	Parameters  []Parameter `yaml:"parameters"`
	// Hierarchy holds exclusivity_group, switchback, description and
	// resources (each may carry `when`), with {{param}} placeholders.
	Hierarchy map[string]any `yaml:"hierarchy"`
}

var (
	all      []Template
	loadErr  error
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	placeRE  = regexp.MustCompile(`\{\{\s*([a-z][a-z0-9_]*)\s*\}\}`)
	exactRE  = regexp.MustCompile(`^\{\{\s*([a-z][a-z0-9_]*)\s*\}\}$`)
	knownTyp = []string{TypeString, TypeInteger, TypeList, TypeAddress, TypePath}
)

func init() { all, loadErr = load(files) }

// load reads and checks every template file of fsys.
func load(fsys fs.FS) ([]Template, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, err
	}
	var out []Template
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		var t Template
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&t); err != nil {
			return nil, fmt.Errorf("template %s: %w", n, err)
		}
		// Through JSON, so that values have the types the API and the
		// kits see: float64 numbers, []any lists, map[string]any maps.
		if t.Hierarchy, err = jsonTypes(t.Hierarchy); err != nil {
			return nil, fmt.Errorf("template %s: %w", n, err)
		}
		for i := range t.Parameters {
			if t.Parameters[i].Type == "" {
				t.Parameters[i].Type = TypeString
			}
			if t.Parameters[i].Default, err = jsonTypes(t.Parameters[i].Default); err != nil {
				return nil, fmt.Errorf("template %s: %w", n, err)
			}
		}
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("template %s: %w", n, err)
		}
		if slices.ContainsFunc(out, func(o Template) bool { return o.Name == t.Name }) {
			return nil, fmt.Errorf("template %s: name %q is used twice", n, t.Name)
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func jsonTypes[T any](v T) (T, error) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, err
	}
	return out, json.Unmarshal(b, &out)
}

// check verifies a template's own consistency: names, types, defaults,
// and that every placeholder names a parameter.
func (t *Template) check() error {
	if !nameRE.MatchString(t.Name) || t.Version < 1 || t.Title == "" {
		return fmt.Errorf("needs a name (lower case), a version >= 1 and a title")
	}
	params := map[string]Parameter{}
	for _, p := range t.Parameters {
		if !nameRE.MatchString(p.Name) || strings.Contains(p.Name, "-") {
			return fmt.Errorf("parameter name %q: lower case letters, digits and _", p.Name)
		}
		if _, dup := params[p.Name]; dup {
			return fmt.Errorf("parameter %q listed twice", p.Name)
		}
		if !slices.Contains(knownTyp, p.Type) {
			return fmt.Errorf("parameter %q: type %q is not one of %v", p.Name, p.Type, knownTyp)
		}
		if p.Default != nil {
			if _, msg := convert(p, p.Default); msg != "" {
				return fmt.Errorf("parameter %q: default: %s", p.Name, msg)
			}
		}
		if p.Description == "" {
			return fmt.Errorf("parameter %q has no description", p.Name)
		}
		params[p.Name] = p
	}
	var bad []string
	walkStrings(t.Hierarchy, func(s string) {
		for _, m := range placeRE.FindAllStringSubmatch(s, -1) {
			if _, ok := params[m[1]]; !ok {
				bad = append(bad, m[1])
			}
		}
	})
	if rs, ok := t.Hierarchy["resources"].([]any); ok {
		for _, r := range rs {
			if w, ok := r.(map[string]any)["when"].(string); ok {
				if _, ok := params[w]; !ok {
					bad = append(bad, w)
				}
			}
		}
	} else {
		return fmt.Errorf("hierarchy.resources must be a list")
	}
	if len(bad) > 0 {
		return fmt.Errorf("placeholders name unknown parameters: %v", bad)
	}
	return nil
}

func walkStrings(v any, f func(string)) {
	switch x := v.(type) {
	case string:
		f(x)
	case []any:
		for _, e := range x {
			walkStrings(e, f)
		}
	case map[string]any:
		for k, e := range x {
			f(k)
			walkStrings(e, f)
		}
	}
}

// List returns every template, by name.
func List() ([]Template, error) { return all, loadErr }

// Find returns the template called name.
func Find(name string) (Template, error) {
	if loadErr != nil {
		return Template{}, loadErr
	}
	for _, t := range all {
		if t.Name == name {
			return t, nil
		}
	}
	names := make([]string, len(all))
	for i, t := range all {
		names[i] = t.Name
	}
	return Template{}, fmt.Errorf("%w: no template %q (templates: %s)", backstop.ErrNotFound, name, strings.Join(names, ", "))
}

// convert checks a parameter value against its type and returns it in
// the form the hierarchy takes.
func convert(p Parameter, v any) (any, string) {
	switch p.Type {
	case TypeInteger:
		f, ok := v.(float64)
		if !ok {
			if i, isInt := v.(int); isInt {
				f, ok = float64(i), true
			}
		}
		if !ok || f != float64(int64(f)) {
			return nil, "must be an integer"
		}
		return f, ""
	case TypeList:
		l, ok := v.([]any)
		if !ok {
			return nil, "must be a list of strings"
		}
		for _, e := range l {
			if s, ok := e.(string); !ok || s == "" {
				return nil, "must be a list of non-empty strings"
			}
		}
		return l, ""
	}
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return nil, "must be a non-empty string"
	}
	switch p.Type {
	case TypeAddress:
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return nil, "must be an IPv4 or IPv6 address without prefix length, e.g. 198.18.1.50"
		}
	case TypePath:
		if !strings.HasPrefix(s, "/") {
			return nil, "must be an absolute path"
		}
	}
	return s, ""
}

// text formats a parameter value inside a longer string.
func text(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatInt(int64(x), 10)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

// Expand returns the hierarchy t describes with values (decoded JSON)
// for its parameters, named name, with the given priorities. Invalid
// values are reported as a *backstop.ValidationError whose locations are
// under /parameters. The result is not normalized: the caller creates it
// like any hierarchy, which validates it.
func (t Template) Expand(name string, values map[string]any, prios []backstop.Priority) (backstop.Hierarchy, error) {
	v := &backstop.ValidationError{}
	vals := map[string]any{}
	byName := map[string]Parameter{}
	for _, p := range t.Parameters {
		byName[p.Name] = p
		given, ok := values[p.Name]
		switch {
		case ok && given != nil:
			c, msg := convert(p, given)
			if msg != "" {
				v.Add("/parameters/"+p.Name, "%s", msg)
				continue
			}
			vals[p.Name] = c
		case p.Default != nil:
			vals[p.Name] = p.Default
		case p.Required:
			v.Add("/parameters/"+p.Name, "required by template %s: %s", t.Name, p.Description)
		}
	}
	for k := range values {
		if _, ok := byName[k]; !ok {
			names := make([]string, len(t.Parameters))
			for i, p := range t.Parameters {
				names[i] = p.Name
			}
			v.Add("/parameters/"+k, "template %s has no parameter %q (its parameters: %s)", t.Name, k, strings.Join(names, ", "))
		}
	}
	if err := v.Err(); err != nil {
		return backstop.Hierarchy{}, err
	}
	hv, err := substitute(t.Hierarchy, vals)
	if err != nil {
		return backstop.Hierarchy{}, fmt.Errorf("template %s: %w", t.Name, err)
	}
	hm := hv.(map[string]any)
	rs, _ := hm["resources"].([]any)
	kept, err := dropUnwanted(rs, vals)
	if err != nil {
		return backstop.Hierarchy{}, fmt.Errorf("template %s: %w", t.Name, err)
	}
	var resources []backstop.Resource
	b, _ := json.Marshal(kept)
	if err := json.Unmarshal(b, &resources); err != nil {
		return backstop.Hierarchy{}, fmt.Errorf("template %s: resources: %w", t.Name, err)
	}
	h := backstop.Hierarchy{Name: name, Resources: resources, Priorities: prios}
	h.Description, _ = hm["description"].(string)
	if h.Description == "" {
		h.Description = t.Title
	}
	h.Description = fmt.Sprintf("%s (from template %s, version %d)", h.Description, t.Name, t.Version)
	h.ExclusivityGroup, _ = hm["exclusivity_group"].(string)
	h.Switchback, _ = hm["switchback"].(string)
	return h, nil
}

// absent marks a value whose optional parameter was not given.
type absent struct{}

func substitute(v any, vals map[string]any) (any, error) {
	switch x := v.(type) {
	case string:
		if m := exactRE.FindStringSubmatch(x); m != nil {
			if val, ok := vals[m[1]]; ok {
				return val, nil
			}
			return absent{}, nil
		}
		var missing []string
		out := placeRE.ReplaceAllStringFunc(x, func(s string) string {
			p := placeRE.FindStringSubmatch(s)[1]
			val, ok := vals[p]
			if !ok {
				missing = append(missing, p)
				return s
			}
			return text(val)
		})
		if len(missing) > 0 {
			return nil, fmt.Errorf("%q uses %v, which has no value and no default", x, missing)
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			s, err := substitute(e, vals)
			if err != nil {
				return nil, err
			}
			if _, gone := s.(absent); !gone {
				out = append(out, s)
			}
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			s, err := substitute(e, vals)
			if err != nil {
				return nil, err
			}
			if _, gone := s.(absent); !gone {
				out[k] = s
			}
		}
		return out, nil
	}
	return v, nil
}

// dropUnwanted leaves out the resources whose `when` parameter has no
// value, rewiring their dependents onto their own dependencies, and
// removes the `when` keys.
func dropUnwanted(rs []any, vals map[string]any) ([]any, error) {
	deps := map[string][]string{} // dropped resource → its dependencies
	var kept []map[string]any
	for _, r := range rs {
		m, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("a resource is not an object")
		}
		w, hasWhen := m["when"].(string)
		delete(m, "when")
		if hasWhen {
			if _, ok := vals[w]; !ok {
				name, _ := m["name"].(string)
				deps[name] = strList(m["depends_on"])
				continue
			}
		}
		kept = append(kept, m)
	}
	var resolve func(d string, seen map[string]bool) []string
	resolve = func(d string, seen map[string]bool) []string {
		next, dropped := deps[d]
		if !dropped {
			return []string{d}
		}
		if seen[d] {
			return nil
		}
		seen[d] = true
		var out []string
		for _, n := range next {
			out = append(out, resolve(n, seen)...)
		}
		return out
	}
	out := make([]any, len(kept))
	for i, m := range kept {
		if ds := strList(m["depends_on"]); len(ds) > 0 {
			var nd []any
			for _, d := range ds {
				for _, r := range resolve(d, map[string]bool{}) {
					if !slices.Contains(nd, any(r)) {
						nd = append(nd, r)
					}
				}
			}
			m["depends_on"] = nd
		}
		out[i] = m
	}
	return out, nil
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
