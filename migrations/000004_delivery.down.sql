DROP TABLE snmp_engine;
DROP TABLE delivery_attempts;
DROP TABLE deliveries;
DROP TABLE targets;
