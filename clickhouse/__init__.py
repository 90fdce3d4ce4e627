"""spanmeter's ClickHouse migrations: frozen, numbered `NNNN_verb_object.sql` files.

Each file holds one change; statements are separated by lines of `;`-terminated SQL. `{db}` is the
only placeholder (the target database, so tests can run each in a fresh one); the migrator in
`spanmeter.ingest.migrate` substitutes it and records applied versions in `{db}.schema_migrations`.
"""
