"""The false-match rate of the hashed table, measured, and the 64-bit figure it implies.

A lookup probes one key per suffix level and compares all 64 bits, so an unlisted name
falsely matches with probability about `probes * n / 2**64`. 64-bit collisions are too rare
to observe, so this measures the same table with keys cut to their top 28 bits (the rest
zero), checks the observed rate against `n / 2**28`, and prints the 64-bit extrapolation.
"""

from __future__ import annotations

import os
import random

from filtercore._table import TableBuilder

BITS = 28
ENTRIES = int(os.environ.get("FILTERDNS_BENCH_ENTRIES", "1000000"))
PROBES = 2_000_000


def test_false_match_rate_follows_n_over_two_to_the_bits() -> None:
    rng = random.Random(5)
    drop = 64 - BITS
    builder = TableBuilder(bytes(16), markers=False)
    listed = set()
    for i in range(ENTRIES):
        key = (rng.getrandbits(BITS)) << drop
        listed.add(key)
        builder.add_key(key, 1, i + 1)
    table = builder.build(lambda a, b: a)
    distinct = len(listed)
    false = 0
    for _ in range(PROBES):
        key = rng.getrandbits(BITS) << drop
        if table.lookup_key(key) is not None:
            false += 1
    observed = false / PROBES
    expected = distinct / 2**BITS
    # Poisson noise on `false` events is about sqrt(false); allow five sigma.
    assert abs(false - expected * PROBES) <= 5 * (expected * PROBES) ** 0.5 + 5
    per_query_64 = 4 * 5_000_000 / 2**64
    print(
        f"\nfalse matches at {BITS} bits: observed {observed:.3e}, expected {expected:.3e}; "
        f"at 64 bits with 5M entries and 4 probes: {per_query_64:.2e} per query "
        f"(one in {1 / per_query_64:.1e} queries)"
    )
