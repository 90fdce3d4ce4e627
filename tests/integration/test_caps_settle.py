"""Which committed rows settle a reservation: a new call of the user, not a correction.

A reservation holds a call's estimated cost until the call's usage lands. Corrections also land as
rows: a repricing writes -1/+1 for the same user and call, a late attribution writes -1 for the old
user and +1 for the new one, and a backfill writes +1 rows for calls made long before. Only the
calls made after the reservation (by the app's clock, with a minute of skew allowed) settle it.
"""

from __future__ import annotations

from decimal import Decimal

from tests.integration.test_caps_api import MIN, TUESDAY, Clock, _record

TIERS = {"default_tier": "t", "tiers": {"t": {"caps": {"session": "1"}}}}


def _caps(store):
    from spanmeter.ingest.caps import Caps, TierBook

    clock = Clock(TUESDAY)
    return Caps(store, TierBook.parse(TIERS), clock=clock), clock


def reserved(caps, user: str) -> Decimal:
    return Decimal(caps._reserved(user, caps.clock())) / 10**12


def land(caps, store, records) -> None:
    """What the writer does: insert, then show the committed rows to the caps engine."""
    store.insert_usage(records)
    caps.observe(records)


def test_a_repricing_pair_does_not_settle_a_reservation(store):
    caps, _ = _caps(store)
    land(caps, store, [_record(1, "ann", TUESDAY - 10 * MIN, 20)])
    assert caps.check("ann", Decimal("0.30")).reservation is not None
    assert reserved(caps, "ann") == Decimal("0.30")

    # The $0.20 call is repriced to $0.25: -1 at the old cost, +1 at the new, same user, same call.
    land(caps, store, [_record(1, "ann", TUESDAY - 10 * MIN, 20, sign=-1), _record(1, "ann", TUESDAY - 10 * MIN, 25)])
    assert reserved(caps, "ann") == Decimal("0.30")
    spent = next(w.spent_pico for w in caps.usage("ann")[2] if w.window.name == "session")
    assert spent == 25 * 10**10

    # The reserved call lands: now the reservation is spent.
    land(caps, store, [_record(2, "ann", TUESDAY + 1000, 28)])
    assert reserved(caps, "ann") == 0
    assert next(w.spent_pico for w in caps.usage("ann")[2] if w.window.name == "session") == 53 * 10**10


def test_a_backfilled_old_call_does_not_settle_but_a_late_attribution_of_a_new_call_does(store):
    caps, clock = _caps(store)
    clock.now = TUESDAY
    first = caps.check("bea", Decimal("0.10")).reservation
    second = caps.check("bea", Decimal("0.15")).reservation
    assert first is not None and second is not None and reserved(caps, "bea") == Decimal("0.25")

    # Backfill: a call from two hours ago, +1, no -1. It is spend, but not the reserved call.
    land(caps, store, [_record(10, "bea", TUESDAY - 120 * MIN, 5)])
    assert reserved(caps, "bea") == Decimal("0.25")

    # A call that landed without a user, attributed later: -1 for "", +1 for bea. It settles the
    # oldest reservation, and the app's clock may run up to a minute behind ours.
    land(caps, store, [_record(11, "", TUESDAY - 30_000, 9)])
    land(caps, store, [_record(11, "", TUESDAY - 30_000, 9, sign=-1), _record(11, "bea", TUESDAY - 30_000, 9)])
    assert reserved(caps, "bea") == Decimal("0.15")
    assert caps._reservations["bea"][0].id == second.id
