-- Users: the writer (the ingest and the collector) and the read-only user (Grafana, ad-hoc SQL).
-- Passwords are query parameters bound by the migrator from SPANMETER_CLICKHOUSE_WRITER_PASSWORD
-- and SPANMETER_CLICKHOUSE_READER_PASSWORD; they never appear in this text.
CREATE USER IF NOT EXISTS {writer_user} IDENTIFIED WITH sha256_password BY {writer_password:String};
-- IF NOT EXISTS keeps an existing user as it is: set the password on every run, so rotating it
-- is changing the variable and migrating again.
ALTER USER {writer_user} IDENTIFIED WITH sha256_password BY {writer_password:String};
GRANT spanmeter_write TO {writer_user};
-- readonly = 2: no writes and no DDL, but the Grafana plugin may still set query settings.
CREATE USER IF NOT EXISTS {reader_user} IDENTIFIED WITH sha256_password BY {reader_password:String} SETTINGS readonly = 2;
ALTER USER {reader_user} IDENTIFIED WITH sha256_password BY {reader_password:String} SETTINGS readonly = 2;
GRANT spanmeter_read TO {reader_user};
