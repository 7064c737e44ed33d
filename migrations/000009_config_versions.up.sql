-- Captured versions of `files` resources (configuration that follows a
-- hierarchy). The node in service uploads a version when the files change;
-- a bring-up elsewhere installs the newest. At most keep_versions rows per
-- (hierarchy, resource): store.UploadConfig prunes the oldest in the
-- transaction that adds one.
CREATE TABLE config_versions (
    hierarchy_id uuid NOT NULL REFERENCES hierarchies (id) ON DELETE CASCADE,
    resource     text NOT NULL,
    version      bigint NOT NULL CHECK (version > 0),
    cluster_id   uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    -- The node that captured it; not a foreign key, so that deleting a
    -- node keeps the history.
    node_id      uuid,
    sha256       text NOT NULL,
    size         bigint NOT NULL,
    -- A secret version's content is sealed (server/seal, bound to
    -- "config/<hierarchy>/<resource>/<version>"); files then carries only
    -- paths, modes, sizes and checksums.
    secret       boolean NOT NULL,
    -- [{path, mode, size, sha256}], sorted by path.
    files        jsonb NOT NULL,
    -- JSON {path: base64 content}, sealed when secret.
    content      bytea NOT NULL,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hierarchy_id, resource, version)
);
