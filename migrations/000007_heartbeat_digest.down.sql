DROP INDEX incidents_awaiting_deep_check_idx;
ALTER TABLE nodes DROP COLUMN report_digest;
