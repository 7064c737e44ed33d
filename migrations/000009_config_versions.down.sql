DROP TABLE config_versions;
