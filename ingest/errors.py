"""The ingest's exception root and its kinds; translated to HTTP status codes at the app boundary."""


class SpanmeterError(Exception):
    """Root of every error the ingest raises on purpose."""


class DecodeError(SpanmeterError):
    """The payload can never be decoded (400: an OTLP exporter must not retry it)."""


class PayloadTooLarge(SpanmeterError):
    """Body, decompressed body or span count over a configured limit (413: never retried)."""


class UnsupportedMediaType(SpanmeterError):
    """Content-Type or Content-Encoding the OTLP/HTTP spec does not allow (415)."""


class Overloaded(SpanmeterError):
    """The batch queue is full (429 with Retry-After: the exporter retries later)."""


class StoreUnavailable(SpanmeterError):
    """ClickHouse cannot be reached or refused the write (503 with Retry-After)."""


class ConfigError(SpanmeterError):
    """Settings that cannot work together, e.g. no token while binding beyond loopback."""
