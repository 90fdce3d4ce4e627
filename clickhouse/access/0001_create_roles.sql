-- Roles on a ClickHouse server (applied by `spanmeter migrate` when the writer and reader
-- passwords are set; never on the embedded engine). Each user gets one role in 0002.
-- {traces_db} is where the collector's ClickHouse exporter writes every span (otel by default).
CREATE ROLE IF NOT EXISTS spanmeter_write;
CREATE ROLE IF NOT EXISTS spanmeter_read;
-- The ingest inserts usage rows (the materialized views run as their definer) and reads keys
-- back to keep duplicates out; the caps and prices features insert their own rows.
GRANT SELECT, INSERT ON {db}.* TO spanmeter_write;
-- The collector's exporter creates its database, tables and lookup view itself, then inserts.
GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE, CREATE VIEW ON {traces_db}.* TO spanmeter_write;
-- Grafana and ad-hoc SQL: read the usage rows, rollups, views and traces; nothing else.
GRANT SELECT ON {db}.* TO spanmeter_read;
GRANT SELECT ON {traces_db}.* TO spanmeter_read;
