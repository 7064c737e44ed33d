-- Backstop schema, version 3: leader election, failure detection,
-- automatic placement, incidents and the event log.

ALTER TABLE control_plane
    ADD COLUMN leader_id    text,
    ADD COLUMN leader_since timestamptz;

-- Every backstopd replica says it is alive here.
CREATE TABLE replicas (
    id           text PRIMARY KEY,
    address      text NOT NULL,
    version      text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE nodes
    ADD COLUMN maintenance boolean NOT NULL DEFAULT false,
    ADD COLUMN state_since timestamptz NOT NULL DEFAULT now();

-- A node a hierarchy failed on is no candidate for it until an operator
-- clears the mark.
CREATE TABLE failed_marks (
    hierarchy_id uuid NOT NULL REFERENCES hierarchies (id) ON DELETE CASCADE,
    node_id      uuid NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hierarchy_id, node_id)
);

-- Placement moves in two steps (out of service on the old node, then in
-- service on the new one) remember where they are going.
ALTER TABLE hierarchies
    ADD COLUMN move_to       uuid,
    ADD COLUMN move_incident uuid,
    ADD COLUMN last_decision text NOT NULL DEFAULT '';

ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
    CHECK (kind IN ('in_service', 'out_of_service', 'switchover'));
ALTER TABLE operations ADD COLUMN target_node_id uuid;

-- Every decision with the inputs that produced it.
CREATE TABLE decisions (
    id           bigserial PRIMARY KEY,
    cluster_id   uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    hierarchy_id uuid NOT NULL,
    kind         text NOT NULL,
    from_node    uuid,
    to_node      uuid,
    reason       text NOT NULL,
    candidates   jsonb NOT NULL,
    inputs       jsonb NOT NULL,
    term         bigint NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_hierarchy_idx ON decisions (hierarchy_id, id);

-- A failover, switchover or switchback, with its measured timeline.
CREATE TABLE incidents (
    id                  uuid PRIMARY KEY,
    cluster_id          uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    hierarchy_id        uuid NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('failover', 'switchover', 'switchback')),
    from_node           uuid,
    to_node             uuid,
    reason              text NOT NULL,
    state               text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved', 'failed')),
    detected_at         timestamptz NOT NULL,
    decided_at          timestamptz,
    stopped_at          timestamptz,
    started_at          timestamptz,
    first_deep_check_at timestamptz,
    recovery_ms         bigint
);
CREATE INDEX incidents_cluster_idx ON incidents (cluster_id, id);

-- The event log. seq is per cluster and taken inside the writing
-- transaction from clusters.event_seq, whose row lock orders writers: a
-- reader following seq never misses an event that commits late.
ALTER TABLE clusters ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;
CREATE TABLE events (
    cluster_id uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    id         uuid NOT NULL UNIQUE,
    type       text NOT NULL,
    severity   text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    subject    jsonb NOT NULL DEFAULT '{}',
    message    text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, seq)
);

-- The incident a command advances (its stop or start step).
ALTER TABLE commands ADD COLUMN incident_id uuid;
