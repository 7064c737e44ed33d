package server

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aymanbagabas/go-udiff"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// ConfigVersionStore keeps the captured versions of files resources
// (configuration that follows a hierarchy).
type ConfigVersionStore interface {
	// UploadConfig stores files as the next version of a files resource
	// of a hierarchy the agent's node holds (created false when they
	// equal the newest), with config.captured, pruning past
	// keep_versions. seal seals a secret resource's content. ErrNotFound,
	// ErrConflict (the node does not hold the hierarchy), ErrInvalid.
	UploadConfig(ctx context.Context, a backstop.AgentIdentity, hierarchyID, resource, sha string, files []backstop.ConfigFile,
		seal func(id string, plain []byte) ([]byte, error)) (backstop.ConfigVersion, bool, error)
	// NewestConfig returns the newest version with its stored content;
	// found is false when none was captured. Errors as UploadConfig's.
	NewestConfig(ctx context.Context, a backstop.AgentIdentity, hierarchyID, resource string) (backstop.ConfigVersion, bool, error)
	// ConfigInstalled writes config.installed. Errors as UploadConfig's.
	ConfigInstalled(ctx context.Context, a backstop.AgentIdentity, hierarchyID, resource string, version int64, sha, source, detail string) error
	// ListConfigVersions lists versions (with the one before each) by
	// resource, newest first. ErrNotFound for an unknown hierarchy.
	ListConfigVersions(ctx context.Context, clusterID, hierarchyID, resource string, p backstop.Page) ([]backstop.ConfigVersion, string, error)
	// FindConfigVersion returns one version with the one before it.
	// ErrNotFound for an unknown hierarchy or version.
	FindConfigVersion(ctx context.Context, clusterID, hierarchyID, resource string, version int64) (backstop.ConfigVersion, error)
}

// configHandlers serve configuration versions: the agents' uploads and
// downloads, and their listing with diffs. Secret versions are sealed by
// the Deliverer's sealer (the one of webhook, SNMP and fence secrets),
// bound to backstop.ConfigSealID, and never shown through the API.
type configHandlers struct {
	store   ConfigVersionStore
	deliver Deliverer
}

func (ch *configHandlers) seal(id string, plain []byte) ([]byte, error) {
	dl, err := requireDeliverer(ch.deliver)
	if err != nil {
		return nil, err
	}
	return dl.Seal(id, plain), nil
}

// open fills v's file contents from its stored content.
func (ch *configHandlers) open(v *backstop.ConfigVersion) error {
	plain := v.Stored
	if v.Secret {
		dl, err := requireDeliverer(ch.deliver)
		if err != nil {
			return err
		}
		if plain, err = dl.Open(backstop.ConfigSealID(v.HierarchyID, v.Resource, v.Version), v.Stored); err != nil {
			return err
		}
	}
	return backstop.OpenConfigContent(v, plain)
}

// AgentUploadConfig stores a captured version.
func (ch *configHandlers) AgentUploadConfig(ctx context.Context, r api.AgentUploadConfigRequestObject) (api.AgentUploadConfigResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	files := make([]backstop.ConfigFile, len(r.Body.Files))
	for i, f := range r.Body.Files {
		files[i] = backstop.ConfigFile{Path: f.Path, Mode: uint32(f.Mode), Size: f.Size, SHA256: f.Sha256, Content: f.Content, MTime: deref(f.Mtime, time.Time{})}
		if files[i].Content == nil {
			files[i].Content = []byte{}
		}
	}
	v, created, err := ch.store.UploadConfig(ctx, a, r.HierarchyId.String(), r.ResourceName, r.Body.Sha256, files, ch.seal)
	if err != nil {
		return nil, err
	}
	out := api.ConfigUploadResult{Version: v.Version, Sha256: v.SHA256, Created: created}
	if created {
		return api.AgentUploadConfig201JSONResponse(out), nil
	}
	return api.AgentUploadConfig200JSONResponse(out), nil
}

// AgentDownloadConfig gives the newest version with its contents.
func (ch *configHandlers) AgentDownloadConfig(ctx context.Context, r api.AgentDownloadConfigRequestObject) (api.AgentDownloadConfigResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	v, found, err := ch.store.NewestConfig(ctx, a, r.HierarchyId.String(), r.ResourceName)
	if err != nil {
		return nil, err
	}
	if !found {
		return api.AgentDownloadConfig204Response{}, nil
	}
	if err := ch.open(&v); err != nil {
		return nil, err
	}
	out := api.AgentDownloadConfig200JSONResponse{Version: v.Version, Sha256: v.SHA256, Secret: v.Secret, CapturedAt: v.CapturedAt,
		Files: make([]api.ConfigFileContent, len(v.Files))}
	if v.NodeID != "" {
		out.NodeId = ptr(apiID(v.NodeID))
	}
	for i, f := range v.Files {
		out.Files[i] = api.ConfigFileContent{Path: f.Path, Mode: int(f.Mode), Size: f.Size, Sha256: f.SHA256, Content: f.Content}
		if !f.MTime.IsZero() {
			out.Files[i].Mtime = ptr(f.MTime)
		}
	}
	return out, nil
}

// AgentConfigInstalled records what a bring-up installed.
func (ch *configHandlers) AgentConfigInstalled(ctx context.Context, r api.AgentConfigInstalledRequestObject) (api.AgentConfigInstalledResponseObject, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	b := r.Body
	if err := ch.store.ConfigInstalled(ctx, a, r.HierarchyId.String(), r.ResourceName, b.Version, b.Sha256, string(b.Source), deref(b.Detail, "")); err != nil {
		return nil, err
	}
	return api.AgentConfigInstalled204Response{}, nil
}

// ListConfigVersions lists versions with what changed since the one
// before each.
func (ch *configHandlers) ListConfigVersions(ctx context.Context, r api.ListConfigVersionsRequestObject) (api.ListConfigVersionsResponseObject, error) {
	vs, next, err := ch.store.ListConfigVersions(ctx, r.ClusterId.String(), r.HierarchyId.String(), deref(r.Params.Resource, ""), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListConfigVersions200JSONResponse{Items: make([]api.ConfigVersion, len(vs)), NextCursor: nextCursor(next)}
	for i, v := range vs {
		item, err := toAPIConfigVersion(v)
		if err != nil {
			return nil, err
		}
		out.Items[i] = item
	}
	return out, nil
}

// GetConfigVersion shows one version with its changes and, unless it is
// secret, its contents.
func (ch *configHandlers) GetConfigVersion(ctx context.Context, r api.GetConfigVersionRequestObject) (api.GetConfigVersionResponseObject, error) {
	v, err := ch.store.FindConfigVersion(ctx, r.ClusterId.String(), r.HierarchyId.String(), r.ResourceName, r.Version)
	if err != nil {
		return nil, err
	}
	out, err := toAPIConfigVersion(v)
	if err != nil {
		return nil, err
	}
	if !v.Secret {
		if err := backstop.OpenConfigContent(&v, v.Stored); err != nil {
			return nil, err
		}
		content := map[string][]byte{}
		for _, f := range v.Files {
			content[f.Path] = f.Content
		}
		for i := range out.Files {
			if c, ok := content[out.Files[i].Path]; ok {
				out.Files[i].Content = &c
			}
		}
	}
	return api.GetConfigVersion200JSONResponse(out), nil
}

// toAPIConfigVersion describes v and its changes since v.Previous: a
// unified diff per changed text file; checksums only for binary files and
// for secret versions, whose contents are never opened here.
func toAPIConfigVersion(v backstop.ConfigVersion) (api.ConfigVersion, error) {
	out := api.ConfigVersion{Resource: v.Resource, Version: v.Version, Sha256: v.SHA256, Size: v.Size, Secret: v.Secret, CapturedAt: v.CapturedAt,
		Files: []api.ConfigFileChange{}}
	if v.NodeID != "" {
		out.NodeId = ptr(apiID(v.NodeID))
	}
	secret := v.Secret || (v.Previous != nil && v.Previous.Secret)
	if !secret {
		if err := backstop.OpenConfigContent(&v, v.Stored); err != nil {
			return out, err
		}
	}
	prev := map[string]backstop.ConfigFile{}
	if v.Previous != nil {
		p := *v.Previous
		if !secret {
			if err := backstop.OpenConfigContent(&p, p.Stored); err != nil {
				return out, err
			}
		}
		for _, f := range p.Files {
			prev[f.Path] = f
		}
	}
	label := func(path string, version int64) string { return path + " (v" + strconv.FormatInt(version, 10) + ")" }
	for _, f := range v.Files {
		c := api.ConfigFileChange{Path: f.Path, Mode: ptr(int(f.Mode)), Size: ptr(f.Size), Sha256: ptr(f.SHA256),
			Binary: secret || !backstop.IsText(f.Content), Change: api.Added}
		p, had := prev[f.Path]
		delete(prev, f.Path)
		switch {
		case v.Previous == nil || !had:
			if !c.Binary {
				c.Diff = ptr(udiff.Unified("/dev/null", label(f.Path, v.Version), "", string(f.Content)))
			}
		case p.SHA256 == f.SHA256 && p.Mode == f.Mode:
			c.Change = api.Unchanged
		default:
			c.Change, c.PreviousSha256 = api.Modified, ptr(p.SHA256)
			c.Binary = c.Binary || !backstop.IsText(p.Content)
			if !c.Binary && p.SHA256 != f.SHA256 {
				c.Diff = ptr(udiff.Unified(label(f.Path, v.Previous.Version), label(f.Path, v.Version), string(p.Content), string(f.Content)))
			}
		}
		out.Files = append(out.Files, c)
	}
	for _, path := range slices.Sorted(maps.Keys(prev)) {
		p := prev[path]
		c := api.ConfigFileChange{Path: path, Change: api.Removed, PreviousSha256: ptr(p.SHA256), Binary: secret || !backstop.IsText(p.Content)}
		if !c.Binary {
			c.Diff = ptr(udiff.Unified(label(path, v.Previous.Version), "/dev/null", string(p.Content), ""))
		}
		out.Files = append(out.Files, c)
	}
	slices.SortStableFunc(out.Files, func(a, b api.ConfigFileChange) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}
