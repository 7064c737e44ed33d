ALTER TABLE incidents DROP COLUMN fenced_at;
ALTER TABLE nodes DROP COLUMN fenced_at;
DROP TABLE fence_devices;
