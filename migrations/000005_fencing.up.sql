-- Peer fencing: one fence device per node, driven by a fence-agents
-- program. The leader fences a down node through it, and moves nothing
-- off the node until the fence is confirmed (nodes.fenced_at after the
-- node's state_since).
CREATE TABLE fence_devices (
    node_id       uuid PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    cluster_id    uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    agent         text NOT NULL CHECK (agent ~ '^fence_[a-z0-9_]+$'),
    params        jsonb NOT NULL DEFAULT '{}',
    -- The names of the secret options (shown); their values are sealed
    -- together (AES-256-GCM, bound to the node id) and never shown.
    secret_names  text[] NOT NULL DEFAULT '{}',
    secret_sealed bytea,
    timeout_s     integer NOT NULL DEFAULT 20 CHECK (timeout_s BETWEEN 1 AND 300),
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- When a fence of the node was last confirmed (by the database clock). A
-- down node with a fence device awaits its fence while fenced_at is null
-- or older than its state_since.
ALTER TABLE nodes ADD COLUMN fenced_at timestamptz;

-- The fence in the failover's timeline.
ALTER TABLE incidents ADD COLUMN fenced_at timestamptz;
