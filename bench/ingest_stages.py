"""Python CPU per span of each ingest stage, in one thread, without HTTP or ClickHouse.

    .venv/bin/python bench/ingest_stages.py
    .venv/bin/python bench/ingest_stages.py --default-gc                          # Python's own GC thresholds
    PYTHONPATH=/path/to/other/checkout/pkg .venv/bin/python bench/ingest_stages.py   # compare code

Each of 130 exports of 1000 spans (bench/workload.py) goes through decode, normalize, price, the
writer's selection (dedupe, leaf rule, lineage: `Writer._select` and `_remember` against a store
that holds nothing) and the serialization of the batch for the insert; thread CPU time is taken
around each stage and the median over the last 100 exports is printed in µs per span. Thread CPU
time rather than wall time, and medians, so that a busy machine disturbs the figures less; to
compare two versions of the code, run both at the same time. The garbage collector is tuned as
in the ingest's processes (`workers.tune_gc`); `--default-gc` keeps Python's default.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workload import ExportTemplates  # noqa: E402

SPANS = 1000
EXPORTS = 130
WARMUP = 30


class _NoStore:
    """What the writer asks of a store, holding nothing."""

    def recent_keys(self, since, limit):
        return []

    def existing_keys(self, keys):
        return set()

    def insert_usage(self, rows, token=None):
        pass

    def insert_usage_arrow(self, table, token=None, *, rollups=True):
        pass

    def insert_rollups(self, table, token):
        pass


def _serializer():
    """The batch in the form the store hands to ClickHouse (Arrow IPC, or Native before it)."""
    from spanmeter.ingest import store

    if hasattr(store, "usage_arrow"):
        import pyarrow as pa

        def serialize(rows):
            table = store.usage_arrow(rows)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            return sink.getvalue()

        return serialize
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext
    from clickhouse_connect.driver.transform import NativeTransform

    transform = NativeTransform()
    types = [get_from_name(t) for t in store._USAGE_TYPES]

    def serialize_native(rows):
        context = InsertContext("t", store._USAGE_NAMES, types, store.usage_columns(rows), column_oriented=True)
        return b"".join(transform.build_insert(context))

    return serialize_native


def main() -> None:
    from spanmeter.ingest.config import Settings
    from spanmeter.ingest.decode import decode
    from spanmeter.ingest.metrics import Metrics
    from spanmeter.ingest.normalize import normalize
    from spanmeter.ingest.price import PriceBook
    from spanmeter.ingest.writer import Writer, _Submission

    try:  # the garbage collector as the ingest's processes run it (workers.tune_gc), if it is tuned
        from spanmeter.ingest.workers import tune_gc
    except ImportError:
        pass
    else:
        if "--default-gc" not in sys.argv:
            tune_gc()
    templates = ExportTemplates.build(count=16, spans_per_export=SPANS, seed=1)
    bodies = [templates.body(i) for i in range(EXPORTS)]
    book = PriceBook.from_files(None)
    writer = Writer(_NoStore(), Settings(clickhouse_dsn="chdb://unused"), Metrics())
    writer._load_recent()
    serialize = _serializer()
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "normalize", "price", "writer", "serialize")}
    clock = time.thread_time_ns
    for i, body in enumerate(bodies):
        t0 = clock()
        spans = decode(body, "application/x-protobuf")
        t1 = clock()
        result = normalize(spans)
        t2 = clock()
        for record in result.records:
            book.price(record)
        t3 = clock()
        rows, _, cancelled = writer._select([_Submission(result.records, list(result.links))])
        writer._remember(rows, cancelled)
        writer._siblings.committed()
        t4 = clock()
        serialize(rows)
        t5 = clock()
        if i >= WARMUP:
            for name, a, b in (("decode", t0, t1), ("normalize", t1, t2), ("price", t2, t3), ("writer", t3, t4),
                               ("serialize", t4, t5)):
                stages[name].append((b - a) / SPANS / 1000)
    total = 0.0
    for name, values in stages.items():
        median = statistics.median(values)
        total += median
        print(f"{name:10s} {median:6.2f} µs/span")
    print(f"{'total':10s} {total:6.2f} µs/span")


if __name__ == "__main__":
    main()
