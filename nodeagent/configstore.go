package nodeagent

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/client"
)

// configStore is kit.ConfigStore over the agent API for one files
// resource of one hierarchy. Transport errors and 5xx wrap
// kit.ErrUnreachable (the kit's on_unreachable decides); other statuses
// are the control plane's refusal, with its problem.
type configStore struct {
	api      *apiClient
	hid      uuid.UUID
	resource string
}

var _ kit.ConfigStore = (*configStore)(nil)

// configPerTry bounds each try of a configuration request: a version is
// at most 512 KiB.
const configPerTry = 10 * time.Second

func unreachable(err error) error { return fmt.Errorf("%w: %v", kit.ErrUnreachable, err) }

func (c *configStore) Newest(ctx context.Context) (*backstop.ConfigVersion, error) {
	resp, err := call(ctx, c.api, configPerTry, func(ctx context.Context, cl *client.ClientWithResponses) (*client.AgentDownloadConfigResponse, error) {
		return cl.AgentDownloadConfigWithResponse(ctx, c.hid, c.resource)
	})
	switch {
	case err != nil:
		return nil, unreachable(err)
	case resp.StatusCode() == http.StatusNoContent:
		return nil, nil
	case resp.StatusCode() != http.StatusOK || resp.JSON200 == nil:
		return nil, unexpected(resp)
	}
	d := resp.JSON200
	v := &backstop.ConfigVersion{HierarchyID: c.hid.String(), Resource: c.resource, Version: d.Version, SHA256: d.Sha256, Secret: d.Secret,
		CapturedAt: d.CapturedAt, Files: make([]backstop.ConfigFile, len(d.Files))}
	if d.NodeId != nil {
		v.NodeID = d.NodeId.String()
	}
	for i, f := range d.Files {
		v.Files[i] = backstop.ConfigFile{Path: f.Path, Mode: uint32(f.Mode), Size: f.Size, SHA256: f.Sha256, Content: f.Content}
		if f.Mtime != nil {
			v.Files[i].MTime = *f.Mtime
		}
		if v.Files[i].Content == nil {
			v.Files[i].Content = []byte{}
		}
	}
	return v, nil
}

func (c *configStore) Upload(ctx context.Context, sha string, files []backstop.ConfigFile) (int64, bool, error) {
	body := client.ConfigUpload{Sha256: sha, Files: make([]client.ConfigFileContent, len(files))}
	for i, f := range files {
		body.Files[i] = client.ConfigFileContent{Path: f.Path, Mode: int(f.Mode), Size: f.Size, Sha256: f.SHA256, Content: f.Content}
		if !f.MTime.IsZero() {
			mt := f.MTime.UTC()
			body.Files[i].Mtime = &mt
		}
	}
	resp, err := call(ctx, c.api, configPerTry, func(ctx context.Context, cl *client.ClientWithResponses) (*client.AgentUploadConfigResponse, error) {
		return cl.AgentUploadConfigWithResponse(ctx, c.hid, c.resource, body)
	})
	switch {
	case err != nil:
		return 0, false, unreachable(err)
	case resp.JSON201 != nil:
		return resp.JSON201.Version, true, nil
	case resp.JSON200 != nil:
		return resp.JSON200.Version, false, nil
	}
	return 0, false, unexpected(resp)
}

func (c *configStore) Installed(ctx context.Context, version int64, sha, source, detail string) error {
	body := client.ConfigInstalled{Version: version, Sha256: sha, Source: client.ConfigInstalledSource(source)}
	if detail != "" {
		body.Detail = &detail
	}
	resp, err := call(ctx, c.api, configPerTry, func(ctx context.Context, cl *client.ClientWithResponses) (*client.AgentConfigInstalledResponse, error) {
		return cl.AgentConfigInstalledWithResponse(ctx, c.hid, c.resource, body)
	})
	switch {
	case err != nil:
		return unreachable(err)
	case resp.StatusCode() != http.StatusNoContent:
		return unexpected(resp)
	}
	return nil
}
