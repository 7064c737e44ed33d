-- Backstop schema, version 2: agents, command signing, placement by hand.

-- Ed25519 keys that sign commands. The private key is sealed with
-- AES-256-GCM under the operator's secret key (--secret-key-file); the
-- database alone cannot sign. One key is active; the others stay trusted.
CREATE TABLE signing_keys (
    key_id          text PRIMARY KEY,
    public_key      bytea NOT NULL,
    private_sealed  bytea NOT NULL,
    active          boolean NOT NULL DEFAULT false,
    endorsed_by     text REFERENCES signing_keys (key_id),
    endorsement     bytea,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;

-- The leader term carried by every command. Leader election (a later
-- version) increments it; until then it stays 1.
CREATE TABLE control_plane (
    id   integer PRIMARY KEY CHECK (id = 1),
    term bigint NOT NULL
);
INSERT INTO control_plane (id, term) VALUES (1, 1);

-- config_version increases with every change an agent must apply; path_key
-- authenticates the agents' UDP path heartbeats.
ALTER TABLE clusters
    ADD COLUMN config_version bigint NOT NULL DEFAULT 1,
    ADD COLUMN path_key bytea NOT NULL DEFAULT sha256(gen_random_uuid()::text::bytea || clock_timestamp()::text::bytea);

ALTER TABLE nodes
    ADD COLUMN agent_public_key  bytea,
    ADD COLUMN credential_hash   bytea UNIQUE,
    ADD COLUMN enrolled_at       timestamptz,
    ADD COLUMN facts             jsonb,
    ADD COLUMN last_heartbeat_at timestamptz,
    ADD COLUMN lease_expires_at  timestamptz,
    ADD COLUMN report            jsonb;

-- Placement: where the hierarchy is in service, with its epoch (the
-- fencing token every command carries).
ALTER TABLE hierarchies
    ADD COLUMN placement_node_id    uuid,
    ADD COLUMN epoch                bigint NOT NULL DEFAULT 0,
    ADD COLUMN placement_state      text NOT NULL DEFAULT 'out_of_service'
        CHECK (placement_state IN ('in_service', 'out_of_service', 'starting', 'stopping', 'failed')),
    ADD COLUMN placement_detail     text NOT NULL DEFAULT '',
    ADD COLUMN placement_updated_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE operations (
    id           uuid PRIMARY KEY,
    cluster_id   uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    hierarchy_id uuid NOT NULL,
    node_id      uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('in_service', 'out_of_service')),
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    epoch        bigint NOT NULL,
    command_id   uuid,
    detail       text NOT NULL DEFAULT '',
    steps        jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Commands are stored with the exact signed bytes the agent receives.
CREATE TABLE commands (
    id               uuid PRIMARY KEY,
    cluster_id       uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    node_id          uuid NOT NULL,
    hierarchy_id     uuid NOT NULL,
    operation_id     uuid,
    action           text NOT NULL,
    epoch            bigint NOT NULL,
    term             bigint NOT NULL,
    key_id           text NOT NULL,
    payload          bytea NOT NULL,
    signature        bytea NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'delivered', 'succeeded', 'failed', 'rejected', 'expired')),
    rejection_reason text NOT NULL DEFAULT '',
    detail           text NOT NULL DEFAULT '',
    steps            jsonb NOT NULL DEFAULT '[]',
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    completed_at     timestamptz
);
CREATE INDEX commands_node_queue_idx ON commands (node_id, issued_at) WHERE status = 'queued';
CREATE INDEX commands_cluster_idx ON commands (cluster_id, id);
CREATE INDEX commands_open_idx ON commands (expires_at) WHERE status IN ('queued', 'delivered');
