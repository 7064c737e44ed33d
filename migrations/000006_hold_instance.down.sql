ALTER TABLE nodes DROP COLUMN hold_instance;
