"""Pseudonymous user ids: a keyed hash applied in the ingest, after normalization and before
anything is priced, queued or stored.

    key = settings.user_id_key                    # SPANMETER_USER_ID_KEY (SecretStr); None: off
    pseudonymize_user_id("alice@example.com", key)  # -> "u_" + 26 base32 characters
    pseudonymize(result, key)                     # in place: every record, and the attribution
                                                  # that uncounted spans lend to later exports

The pseudonym is HMAC-SHA256(key, user id), its first 130 bits in lowercase base32 behind `u_`.
The same id under the same key always gives the same pseudonym, so per-user totals, caps and
rollups work unchanged; a different key gives unrelated pseudonyms. Without the key nobody can
recompute a pseudonym from a guessed id (a plain hash of an e-mail address is reversed by hashing
candidate addresses), so the usage tables hold no user id, only pseudonyms. Whoever holds the key
and a user id can compute that user's pseudonym (`spanmeter pseudonym`, or this function) to look
them up. Changing the key starts every user afresh under a new pseudonym.

Only `user_id` is replaced. Session and conversation ids are random per-session handles that the
application generates (they identify a conversation, not a person), and keeping them lets an
operator follow a usage row to its trace. An application that puts a person's identity into
session ids should not.

The unknown user (empty id) stays empty.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from pydantic import SecretStr

PREFIX = "u_"
_CHARS = 26  # 130 bits of the digest in base32


def pseudonymize_user_id(user_id: str, key: SecretStr | bytes | str) -> str:
    if not user_id:
        return user_id
    secret = key.get_secret_value() if isinstance(key, SecretStr) else key
    if isinstance(secret, str):
        secret = secret.encode()
    digest = hmac.new(secret, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return PREFIX + base64.b32encode(digest).decode("ascii")[:_CHARS].lower()


def pseudonymize(result: Any, key: SecretStr) -> None:
    """Replace user ids in a `normalize.Normalized` in place: its records and the attribution its
    links carry (the writer lends that to descendants arriving in later exports)."""
    secret = key.get_secret_value().encode()
    cache: dict[str, str] = {}

    def pseudonym(user_id: str) -> str:
        out = cache.get(user_id)
        if out is None:
            out = cache[user_id] = pseudonymize_user_id(user_id, secret)
        return out

    for record in result.records:
        if record.attribution.user_id:
            record.attribution.user_id = pseudonym(record.attribution.user_id)
    for link in result.links:
        attribution = getattr(link, "attribution", None)
        if attribution is not None and attribution.user_id:
            attribution.user_id = pseudonym(attribution.user_id)
