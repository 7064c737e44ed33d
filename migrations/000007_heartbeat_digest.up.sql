-- The digest of the part of a node's last stored report that anything
-- reads (hierarchy states, check results, restarts, path states; not
-- round-trip times, losses or check times). A heartbeat whose report has
-- the same digest, from an up node without a restart hold or an open
-- incident, only renews the lease: one UPDATE, no report rewritten. NULL:
-- no digest yet (the next heartbeat stores its report).
ALTER TABLE nodes ADD COLUMN report_digest bytea;

-- Incidents still waiting for their first passing deep check on the node
-- they moved to: while a node has one, its heartbeats store their reports
-- (the check's time ends the incident's timeline).
CREATE INDEX incidents_awaiting_deep_check_idx ON incidents (to_node)
    WHERE started_at IS NOT NULL AND first_deep_check_at IS NULL;
