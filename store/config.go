package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// Configuration versions of files resources (migration 000009).

// configFileMeta is a file of a version as the files column keeps it.
type configFileMeta struct {
	Path   string    `json:"path"`
	Mode   uint32    `json:"mode"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"`
	MTime  time.Time `json:"mtime,omitzero"`
}

func metaOf(files []backstop.ConfigFile) []configFileMeta {
	out := make([]configFileMeta, len(files))
	for i, f := range files {
		out[i] = configFileMeta{Path: f.Path, Mode: f.Mode, Size: f.Size, SHA256: f.SHA256, MTime: f.MTime}
	}
	return out
}

func filesOf(meta []configFileMeta) []backstop.ConfigFile {
	out := make([]backstop.ConfigFile, len(meta))
	for i, m := range meta {
		out[i] = backstop.ConfigFile{Path: m.Path, Mode: m.Mode, Size: m.Size, SHA256: m.SHA256, MTime: m.MTime}
	}
	return out
}

const configColumns = `c.cluster_id, c.hierarchy_id, c.resource, c.version, c.sha256, c.size, c.secret, coalesce(c.node_id::text, ''), c.captured_at, c.files, c.content`

func scanConfigVersion(row pgx.Row, extra ...any) (backstop.ConfigVersion, error) {
	var v backstop.ConfigVersion
	var meta []configFileMeta
	err := row.Scan(append([]any{&v.ClusterID, &v.HierarchyID, &v.Resource, &v.Version, &v.SHA256, &v.Size, &v.Secret, &v.NodeID, &v.CapturedAt, &meta, &v.Stored}, extra...)...)
	v.Files = filesOf(meta)
	return v, err
}

// holderTx reads hierarchy hierarchyID of clusterID (locked FOR UPDATE
// when lock is set) and checks that nodeID holds it: the hierarchy is
// placed on the node, starting or in service (or stopping, with
// stopping set: the last holder uploads its last change while it takes
// the hierarchy down). backstop.ErrNotFound for an unknown hierarchy,
// backstop.ErrConflict naming where it is otherwise.
func holderTx(ctx context.Context, tx pgx.Tx, clusterID, hierarchyID, nodeID string, lock, stopping bool) (backstop.Hierarchy, error) {
	q := `SELECT ` + hierarchyColumns + ` FROM hierarchies WHERE cluster_id = $1 AND id = $2`
	if lock {
		q += ` FOR UPDATE`
	}
	h, err := scanHierarchy(tx.QueryRow(ctx, q, clusterID, hierarchyID))
	if err != nil {
		return h, fmt.Errorf("hierarchy %s: %w", hierarchyID, interpretError(err))
	}
	p := h.Placement
	held := p.State == backstop.PlacementStarting || p.State == backstop.PlacementInService || (stopping && p.State == backstop.PlacementStopping)
	if p.NodeID != nodeID || !held {
		where := "is not placed on any node"
		if p.NodeID != "" {
			where = fmt.Sprintf("is placed on node %s (%s, epoch %d)", p.NodeID, p.State, p.Epoch)
		}
		return h, fmt.Errorf("%w: node %s does not hold hierarchy %q: it %s; only the node that brings it in service or runs it may read or write its configuration",
			backstop.ErrConflict, nodeID, h.Name, where)
	}
	return h, nil
}

// UploadConfig stores files as the next version of the files resource of
// a hierarchy that nodeID holds (placed there, starting, in service or
// stopping),
// with a config.captured event, and deletes the versions past the
// resource's keep_versions, all in one transaction. When the files equal
// the newest version, nothing is written and created is false. seal
// seals the content of a secret resource's version for the id it is
// given (backstop.ConfigSealID); it may be nil when the resource is not
// secret.
//
// Errors: backstop.ErrNotFound (hierarchy, or no such files resource),
// backstop.ErrConflict (the node does not hold the hierarchy), a
// *backstop.ValidationError (backstop.CheckConfigUpload).
func (s *Store) UploadConfig(ctx context.Context, a backstop.AgentIdentity, hierarchyID, resource, sha string, files []backstop.ConfigFile,
	seal func(id string, plain []byte) ([]byte, error)) (v backstop.ConfigVersion, created bool, err error) {
	type result struct {
		v       backstop.ConfigVersion
		created bool
	}
	r, err := withTx(ctx, s, func(tx pgx.Tx) (result, error) {
		h, err := holderTx(ctx, tx, a.ClusterID, hierarchyID, a.NodeID, true, true)
		if err != nil {
			return result{}, err
		}
		res, err := backstop.FilesResource(h, resource)
		if err != nil {
			return result{}, err
		}
		if err := backstop.CheckConfigUpload(res, files, sha); err != nil {
			return result{}, err
		}
		params := backstop.ParseFilesParams(res.Params)
		newest, err := scanConfigVersion(tx.QueryRow(ctx, `SELECT `+configColumns+` FROM config_versions c
			WHERE c.hierarchy_id = $1 AND c.resource = $2 ORDER BY c.version DESC LIMIT 1`, hierarchyID, resource))
		switch {
		case err == nil && newest.SHA256 == sha && newest.Secret == params.Secret:
			return result{v: newest}, nil
		case err != nil && interpretError(err) != backstop.ErrNotFound:
			return result{}, err
		}
		v := backstop.ConfigVersion{ClusterID: h.ClusterID, HierarchyID: h.ID, Resource: resource, Version: newest.Version + 1,
			SHA256: sha, Secret: params.Secret, NodeID: a.NodeID, Files: files}
		for _, f := range files {
			v.Size += f.Size
		}
		content := backstop.ConfigContent(files)
		if params.Secret {
			if seal == nil {
				return result{}, fmt.Errorf("resource %q is secret but no sealer is configured", resource)
			}
			if content, err = seal(backstop.ConfigSealID(h.ID, resource, v.Version), content); err != nil {
				return result{}, err
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO config_versions (hierarchy_id, resource, version, cluster_id, node_id, sha256, size, secret, files, content)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING captured_at`,
			h.ID, resource, v.Version, h.ClusterID, a.NodeID, sha, v.Size, v.Secret, metaOf(files), content).Scan(&v.CapturedAt); err != nil {
			return result{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM config_versions WHERE hierarchy_id = $1 AND resource = $2 AND version <= $3`,
			h.ID, resource, v.Version-int64(params.KeepVersions)); err != nil {
			return result{}, err
		}
		paths := make([]string, len(files))
		for i, f := range files {
			paths[i] = f.Path
		}
		if err := writeEvent(ctx, tx, h.ClusterID, "config.captured", backstop.SeverityInfo,
			map[string]string{"hierarchy_id": h.ID, "node_id": a.NodeID},
			map[string]any{"resource": resource, "version": v.Version, "sha256": sha, "node_id": a.NodeID, "size": v.Size, "files": paths, "secret": v.Secret},
			"configuration %s of hierarchy %s captured on node %s as version %d", resource, h.Name, a.NodeName, v.Version); err != nil {
			return result{}, err
		}
		return result{v: v, created: true}, nil
	})
	return r.v, r.created, err
}

// NewestConfig returns the newest version of a files resource of a
// hierarchy that nodeID holds, with its stored (maybe sealed) content;
// found is false when none was captured. Errors as UploadConfig's.
func (s *Store) NewestConfig(ctx context.Context, a backstop.AgentIdentity, hierarchyID, resource string) (v backstop.ConfigVersion, found bool, err error) {
	type result struct {
		v     backstop.ConfigVersion
		found bool
	}
	r, err := withTx(ctx, s, func(tx pgx.Tx) (result, error) {
		h, err := holderTx(ctx, tx, a.ClusterID, hierarchyID, a.NodeID, false, false)
		if err != nil {
			return result{}, err
		}
		if _, err := backstop.FilesResource(h, resource); err != nil {
			return result{}, err
		}
		v, err := scanConfigVersion(tx.QueryRow(ctx, `SELECT `+configColumns+` FROM config_versions c
			WHERE c.hierarchy_id = $1 AND c.resource = $2 ORDER BY c.version DESC LIMIT 1`, hierarchyID, resource))
		if err != nil {
			if interpretError(err) == backstop.ErrNotFound {
				return result{}, nil
			}
			return result{}, err
		}
		return result{v: v, found: true}, nil
	})
	return r.v, r.found, err
}

// ConfigInstalled records, with a config.installed event, what a node
// that holds the hierarchy installed of a files resource at bring-up:
// version (0 for none) with its checksum, from source ("control_plane"
// or "local", with detail saying why). Errors as UploadConfig's.
func (s *Store) ConfigInstalled(ctx context.Context, a backstop.AgentIdentity, hierarchyID, resource string, version int64, sha, source, detail string) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		h, err := holderTx(ctx, tx, a.ClusterID, hierarchyID, a.NodeID, false, false)
		if err != nil {
			return struct{}{}, err
		}
		if _, err := backstop.FilesResource(h, resource); err != nil {
			return struct{}{}, err
		}
		details := map[string]any{"resource": resource, "version": version, "sha256": sha, "node_id": a.NodeID, "source": source}
		msg := fmt.Sprintf("node %s installed version %d of configuration %s of hierarchy %s", a.NodeName, version, resource, h.Name)
		if source != "control_plane" {
			details["detail"] = detail
			msg = fmt.Sprintf("node %s started hierarchy %s with its own files for configuration %s (%s)", a.NodeName, h.Name, resource, detail)
		}
		return struct{}{}, writeEvent(ctx, tx, h.ClusterID, "config.installed", backstop.SeverityInfo,
			map[string]string{"hierarchy_id": h.ID, "node_id": a.NodeID}, details, "%s", msg)
	})
	return err
}

// configCursor is the key of a version in lists: resource name, then
// version, newest first.
func configCursor(p backstop.Page) (string, int64, error) {
	if p.Cursor == "" {
		return "", math.MaxInt64, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(p.Cursor)
	if err != nil {
		return "", 0, errBadCursor
	}
	res, n, ok := strings.Cut(string(b), "\x00")
	v, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil {
		return "", 0, errBadCursor
	}
	return res, v, nil
}

// ListConfigVersions lists the versions of a hierarchy's files resources
// (of resource only, when not empty) by resource name, newest version
// first, each with the version before it (Previous) and their stored
// contents. backstop.ErrNotFound for an unknown hierarchy.
func (s *Store) ListConfigVersions(ctx context.Context, clusterID, hierarchyID, resource string, p backstop.Page) ([]backstop.ConfigVersion, string, error) {
	afterRes, afterVer, err := configCursor(p)
	if err != nil {
		return nil, "", err
	}
	var one int
	if err := s.pool.QueryRow(ctx, `SELECT 1 FROM hierarchies WHERE cluster_id = $1 AND id = $2`, clusterID, hierarchyID).Scan(&one); err != nil {
		return nil, "", fmt.Errorf("hierarchy %s: %w", hierarchyID, interpretError(err))
	}
	items, err := s.queryConfigVersions(ctx, `c.hierarchy_id = $1 AND ($2 = '' OR c.resource = $2)
		AND (c.resource > $3 OR (c.resource = $3 AND c.version < $4))
		ORDER BY c.resource, c.version DESC LIMIT $5`, hierarchyID, resource, afterRes, afterVer, pageLimit(p))
	if err != nil {
		return nil, "", err
	}
	items, next := trimPage(items, p, func(v backstop.ConfigVersion) string {
		return v.Resource + "\x00" + strconv.FormatInt(v.Version, 10)
	})
	return items, next, nil
}

// FindConfigVersion returns one version of a hierarchy's files resource
// with the version before it (Previous) and their stored contents.
// backstop.ErrNotFound for an unknown hierarchy and for a version never
// captured or pruned.
func (s *Store) FindConfigVersion(ctx context.Context, clusterID, hierarchyID, resource string, version int64) (backstop.ConfigVersion, error) {
	var one int
	if err := s.pool.QueryRow(ctx, `SELECT 1 FROM hierarchies WHERE cluster_id = $1 AND id = $2`, clusterID, hierarchyID).Scan(&one); err != nil {
		return backstop.ConfigVersion{}, fmt.Errorf("hierarchy %s: %w", hierarchyID, interpretError(err))
	}
	vs, err := s.queryConfigVersions(ctx, `c.hierarchy_id = $1 AND c.resource = $2 AND c.version = $3`, hierarchyID, resource, version)
	if err != nil {
		return backstop.ConfigVersion{}, err
	}
	if len(vs) == 0 {
		return backstop.ConfigVersion{}, fmt.Errorf("%w: resource %q has no configuration version %d (never captured, or pruned past keep_versions)",
			backstop.ErrNotFound, resource, version)
	}
	return vs[0], nil
}

// queryConfigVersions reads versions matching where (on c, with args),
// each with the version before it.
func (s *Store) queryConfigVersions(ctx context.Context, where string, args ...any) ([]backstop.ConfigVersion, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+configColumns+`, p.version, p.sha256, p.secret, p.files, p.content
		FROM config_versions c
		LEFT JOIN LATERAL (SELECT version, sha256, secret, files, content FROM config_versions p
			WHERE p.hierarchy_id = c.hierarchy_id AND p.resource = c.resource AND p.version < c.version
			ORDER BY p.version DESC LIMIT 1) p ON true
		WHERE `+where, args...)
	if err != nil {
		return nil, interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.ConfigVersion, error) {
		var pv *int64
		var psha *string
		var psecret *bool
		var pmeta []configFileMeta
		var pstored []byte
		v, err := scanConfigVersion(r, &pv, &psha, &psecret, &pmeta, &pstored)
		if err == nil && pv != nil {
			v.Previous = &backstop.ConfigVersion{ClusterID: v.ClusterID, HierarchyID: v.HierarchyID, Resource: v.Resource,
				Version: *pv, SHA256: *psha, Secret: *psecret, Files: filesOf(pmeta), Stored: pstored}
		}
		return v, err
	})
	return items, interpretError(err)
}
