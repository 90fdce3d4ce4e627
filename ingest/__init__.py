"""spanmeter's server side: the OTLP/HTTP ingest, its pipeline stages and the ClickHouse store.

Stages, one module each, plain functions over plain data (`records`):
decode (OTLP bytes -> spans) -> normalize (spans -> usage records) -> price -> store.
`app` wires HTTP routes to the stages; `cli` is the `spanmeter` command.

Install with `pip install 'spanmeter[server]'`.
"""
