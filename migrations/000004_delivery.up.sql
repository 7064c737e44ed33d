-- Backstop schema, version 4: event delivery to webhooks and SNMP
-- managers. River's own tables (river_job, ...) are created by
-- rivermigrate at start (store.Migrate), not here.

-- A delivery target: a webhook receiver or an SNMP manager. Both kinds
-- share the filters, so writeEvent matches every target with one query.
-- Secrets (the webhook signing secret, the SNMP community or v3
-- passphrases) are sealed with AES-256-GCM under the operator's secret key
-- (--secret-key-file) before they reach this table.
CREATE TABLE targets (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('webhook', 'snmp')),
    name         text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    enabled      boolean NOT NULL DEFAULT true,
    -- Empty: every type. Entries are exact types or prefixes ending in ".*".
    event_types  text[] NOT NULL DEFAULT '{}',
    min_severity text NOT NULL CHECK (min_severity IN ('info', 'warning', 'critical')),
    -- Empty: every cluster.
    cluster_ids  uuid[] NOT NULL DEFAULT '{}',
    config       jsonb NOT NULL,
    secret       bytea NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- The one worker that delivers to this target right now (deliveries to
    -- a target go one at a time, in order); expires if it dies.
    lease_owner  uuid,
    lease_until  timestamptz
);
CREATE INDEX targets_kind_idx ON targets (kind, id);

-- One event (or ping, or test) for one target. Deliveries of a target are
-- made in id order: within a cluster ids follow the event seq, because
-- writeEvent inserts them under the cluster's row lock.
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    public_id       uuid NOT NULL UNIQUE,
    target_id       uuid NOT NULL REFERENCES targets (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('event', 'redelivery', 'ping', 'test')),
    event_id        uuid NOT NULL,
    cluster_id      uuid,
    event_seq       bigint,
    event_type      text NOT NULL,
    -- The event as delivered, frozen at enqueue time: the log may be
    -- pruned and the cluster deleted before a late retry.
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead_lettered', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX deliveries_target_idx ON deliveries (target_id, id);
CREATE INDEX deliveries_pending_idx ON deliveries (target_id, id) WHERE status = 'pending';

-- Every attempt of a delivery, as the delivery log shows it.
CREATE TABLE delivery_attempts (
    delivery_id      bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    n                integer NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    latency_ms       double precision NOT NULL,
    status_code      integer,
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    error            text NOT NULL DEFAULT '',
    response_excerpt text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, n)
);

-- The SNMPv3 engine backstopd sends traps as (it is the authoritative
-- engine of a trap). One engine for every replica: its id never changes,
-- boots increases at every start of any replica, and engine time is
-- counted from boots_at by the database clock, so every replica sends
-- the same, never decreasing, boots and time.
CREATE TABLE snmp_engine (
    id        integer PRIMARY KEY CHECK (id = 1),
    engine_id bytea NOT NULL,
    boots     bigint NOT NULL CHECK (boots BETWEEN 0 AND 2147483647),
    boots_at  timestamptz NOT NULL DEFAULT now()
);
