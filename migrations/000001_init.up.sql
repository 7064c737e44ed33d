-- Backstop schema, version 1: configuration, tokens, audit, idempotency.

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    secret_hash  bytea NOT NULL UNIQUE,
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

CREATE TABLE clusters (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    description        text NOT NULL DEFAULT '',
    timing_profile     text NOT NULL CHECK (timing_profile IN ('fast', 'lan', 'wan', 'custom')),
    timing             jsonb NOT NULL,
    switchback_default text NOT NULL CHECK (switchback_default IN ('intelligent', 'automatic')),
    fencing            text NOT NULL CHECK (fencing IN ('self', 'none')),
    version            bigint NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
    id                    uuid PRIMARY KEY,
    cluster_id            uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    name                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    state                 text NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'up', 'down', 'unreachable', 'maintenance')),
    enrollment_hash       bytea UNIQUE,
    enrollment_expires_at timestamptz,
    version               bigint NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster_id, name),
    UNIQUE (cluster_id, id)
);

-- One row per direction; both directions share link_id.
CREATE TABLE paths (
    id             uuid PRIMARY KEY,
    cluster_id     uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    link_id        uuid NOT NULL,
    reverse_id     uuid NOT NULL,
    local_node_id  uuid NOT NULL,
    local_address  inet NOT NULL,
    remote_node_id uuid NOT NULL,
    remote_address inet NOT NULL,
    priority       integer NOT NULL CHECK (priority BETWEEN 1 AND 99),
    created_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (cluster_id, local_node_id) REFERENCES nodes (cluster_id, id) ON DELETE CASCADE,
    FOREIGN KEY (cluster_id, remote_node_id) REFERENCES nodes (cluster_id, id) ON DELETE CASCADE,
    UNIQUE (local_node_id, local_address, remote_node_id, remote_address),
    CHECK (local_node_id <> remote_node_id)
);
CREATE INDEX paths_cluster_idx ON paths (cluster_id, id);
CREATE INDEX paths_link_idx ON paths (link_id);

CREATE TABLE hierarchies (
    id                uuid PRIMARY KEY,
    cluster_id        uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    exclusivity_group text NOT NULL DEFAULT '',
    switchback        text NOT NULL CHECK (switchback IN ('intelligent', 'automatic')),
    -- The resource DAG, validated as a whole on every write.
    resources         jsonb NOT NULL,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster_id, name),
    UNIQUE (cluster_id, id)
);

-- A node may not be removed while a hierarchy names it: store.DeleteNode
-- refuses that (naming the hierarchies) under the node's row lock, which
-- hierarchy writes share. The foreign key cascades so that deleting a whole
-- cluster removes nodes and hierarchies in any order.
CREATE TABLE hierarchy_priorities (
    cluster_id   uuid NOT NULL,
    hierarchy_id uuid NOT NULL,
    node_id      uuid NOT NULL,
    priority     integer NOT NULL CHECK (priority BETWEEN 1 AND 999),
    PRIMARY KEY (hierarchy_id, node_id),
    UNIQUE (hierarchy_id, priority),
    FOREIGN KEY (cluster_id, hierarchy_id) REFERENCES hierarchies (cluster_id, id) ON DELETE CASCADE,
    FOREIGN KEY (cluster_id, node_id) REFERENCES nodes (cluster_id, id) ON DELETE CASCADE
);
CREATE INDEX hierarchy_priorities_node_idx ON hierarchy_priorities (node_id);

-- No foreign keys: the trail outlives what it describes.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    actor_token_id uuid,
    action         text NOT NULL,
    target_type    text NOT NULL,
    target_id      text NOT NULL,
    cluster_id     uuid,
    details        jsonb NOT NULL DEFAULT '{}'
);

-- Responses of POSTs sent with an Idempotency-Key, per token, kept 24 h.
CREATE TABLE idempotency_keys (
    token_id     uuid NOT NULL,
    key          text NOT NULL,
    method       text NOT NULL,
    path         text NOT NULL,
    request_hash bytea NOT NULL,
    status       integer,           -- NULL while the first request runs
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
