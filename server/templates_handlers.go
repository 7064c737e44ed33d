package server

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
	"github.com/backstop-ha/backstop/server/templates"
)

// ListTemplates lists the hierarchy templates.
func (hh *hierarchyHandlers) ListTemplates(ctx context.Context, r api.ListTemplatesRequestObject) (api.ListTemplatesResponseObject, error) {
	ts, err := templates.List()
	if err != nil {
		return nil, err
	}
	out := api.ListTemplates200JSONResponse{Items: make([]api.Template, len(ts))}
	for i, t := range ts {
		out.Items[i] = toAPITemplate(t)
	}
	return out, nil
}

// GetTemplate returns one hierarchy template.
func (hh *hierarchyHandlers) GetTemplate(ctx context.Context, r api.GetTemplateRequestObject) (api.GetTemplateResponseObject, error) {
	t, err := templates.Find(r.TemplateName)
	if err != nil {
		return nil, err
	}
	return api.GetTemplate200JSONResponse(toAPITemplate(t)), nil
}

// CreateHierarchyFromTemplate expands a template and creates the result
// as an ordinary hierarchy.
func (hh *hierarchyHandlers) CreateHierarchyFromTemplate(ctx context.Context, r api.CreateHierarchyFromTemplateRequestObject) (api.CreateHierarchyFromTemplateResponseObject, error) {
	b := r.Body
	t, h, err := expandTemplate(b.Template, b.Version, b.Name, b.Parameters, b.Priorities)
	if err != nil {
		return nil, err
	}
	h.ClusterID = r.ClusterId.String()
	if b.Description != nil {
		h.Description = *b.Description
	}
	created, err := hh.store.CreateHierarchy(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("the hierarchy expanded from template %s (version %d): %w", t.Name, t.Version, err)
	}
	return api.CreateHierarchyFromTemplate201JSONResponse{Body: toAPIHierarchy(created), Headers: api.CreateHierarchyFromTemplate201ResponseHeaders{
		ETag: etag(created.Version), Location: location("/v1/clusters/%s/hierarchies/%s", created.ClusterID, created.ID),
	}}, nil
}

// ExpandTemplate returns the hierarchy a template gives with these
// parameters, creating nothing.
func (hh *hierarchyHandlers) ExpandTemplate(ctx context.Context, r api.ExpandTemplateRequestObject) (api.ExpandTemplateResponseObject, error) {
	b := r.Body
	t, h, err := expandTemplate(r.TemplateName, b.Version, b.Name, b.Parameters, b.Priorities)
	if err != nil {
		return nil, err
	}
	spec := api.HierarchySpec{Name: h.Name, Description: &h.Description, Priorities: b.Priorities}
	if h.ExclusivityGroup != "" {
		spec.ExclusivityGroup = &h.ExclusivityGroup
	}
	if h.Switchback != "" {
		sb := api.SwitchbackPolicy(h.Switchback)
		spec.Switchback = &sb
	}
	// The domain's resources carry the contract's JSON names.
	raw, err := json.Marshal(h.Resources)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &spec.Resources); err != nil {
		return nil, fmt.Errorf("template %s: expanded resources: %w", t.Name, err)
	}
	return api.ExpandTemplate200JSONResponse(spec), nil
}

func toAPITemplate(t templates.Template) api.Template {
	ps := make([]api.TemplateParameter, len(t.Parameters))
	for i, p := range t.Parameters {
		ps[i] = api.TemplateParameter{Name: p.Name, Description: p.Description, Type: api.TemplateParameterType(p.Type), Required: p.Required, Default: p.Default}
	}
	return api.Template{Name: t.Name, Version: t.Version, Title: t.Title, Description: t.Description, Parameters: ps, Hierarchy: t.Hierarchy}
}

// expandTemplate finds a template, checks the version the client read (if
// it says) and expands it with the client's parameters.
func expandTemplate(name string, version *int, hierarchy string, params map[string]any, prios []api.Priority) (templates.Template, backstop.Hierarchy, error) {
	t, err := templates.Find(name)
	if err != nil {
		return t, backstop.Hierarchy{}, err
	}
	if version != nil && *version != t.Version {
		return t, backstop.Hierarchy{}, backstop.Invalid("/version", "template %s is at version %d, not %d: read it again (GET /v1/templates/%s) and check its parameters", t.Name, t.Version, *version, t.Name)
	}
	h, err := t.Expand(hierarchy, params, fromAPIPriorities(prios))
	return t, h, err
}
