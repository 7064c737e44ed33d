DROP TABLE IF EXISTS commands;
DROP TABLE IF EXISTS operations;
ALTER TABLE hierarchies
    DROP COLUMN IF EXISTS placement_node_id, DROP COLUMN IF EXISTS epoch, DROP COLUMN IF EXISTS placement_state,
    DROP COLUMN IF EXISTS placement_detail, DROP COLUMN IF EXISTS placement_updated_at;
ALTER TABLE nodes
    DROP COLUMN IF EXISTS agent_public_key, DROP COLUMN IF EXISTS credential_hash, DROP COLUMN IF EXISTS enrolled_at,
    DROP COLUMN IF EXISTS facts, DROP COLUMN IF EXISTS last_heartbeat_at, DROP COLUMN IF EXISTS lease_expires_at,
    DROP COLUMN IF EXISTS report;
ALTER TABLE clusters DROP COLUMN IF EXISTS config_version, DROP COLUMN IF EXISTS path_key;
DROP TABLE IF EXISTS control_plane;
DROP TABLE IF EXISTS signing_keys;
