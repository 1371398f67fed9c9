"""Test data: the NSD zone, the blocklist in each peer's format, dnsperf query files.

Names are deterministic (seeded), so runs compare. The zone `bench.test` holds WORKING_SET
allowed names with an A record each (the repeated 80% of the mix), a wildcard under
`new.bench.test` (the never-asked-before names of the miss-heavy mix resolve), and no
`nx*` names (NXDOMAIN). Blocked names live under other TLDs and are never asked upstream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

ZONE = "bench.test"
RULE_ZONE = f"new.{ZONE}"  # the never-asked names: a `[[forward]]` rule's (--forward-rule)
WORKING_SET = 5_000  # distinct allowed names repeated by the mix
OTHER_SET = 1_000  # distinct NXDOMAIN / NODATA names
BLOCKED_ASKED = 5_000  # distinct blocked names asked (drawn from the blocklist)
QUERIES = 200_000  # lines per query file (dnsperf loops over it)
TTL = 3600


@dataclass(frozen=True)
class Dataset:
    """The files of one run."""

    directory: Path
    zone_file: Path
    blocklist: list[str]
    domains_file: Path  # one name a line (filterdns `domains` format)
    mix_file: Path  # 80% allowed repeated, 10% blocked, 10% other
    miss_file: Path  # 50% never-asked names, rest like the mix
    warm_file: Path  # each name of the mix once (cache warming)
    expressions_file: Path  # UT1-style expressions that no asked name matches


# Gambling expressions in the shape of UT1's `expressions` files: a bare alternation, and
# one bounded by UT1's delimiter class. The benchmark's names match neither, so every
# unlisted miss runs them and still goes upstream (the `filterdns+text` run).
EXPRESSIONS = (
    "(baccarat|blackjack|bookmaker|casino|jackpot|lottery|pokies|roulette|sportsbook)",
    "(^|[-.?+=/_])(free|online|live|best)?(bet|bingo|craps|gamble|keno|poker|slots?|wager)"
    "s?([-.?+=/_]|$)",
)


def blocked_name(i: int) -> str:
    """The i-th blocklist entry: distinct registrable names under a few TLDs."""
    return f"bad{i}-{(i * 7919) % 100003}.{('com', 'net', 'org', 'xyz')[i % 4]}"


def allowed_name(i: int) -> str:
    return f"host{i}.{ZONE}"


def zone_text() -> str:
    lines = [
        f"$ORIGIN {ZONE}.",
        f"$TTL {TTL}",
        f"@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 300",
        f"@ IN NS ns.{ZONE}.",
        "ns IN A 127.0.0.1",
        "*.new IN A 192.0.2.77",
    ]
    for i in range(WORKING_SET):
        lines.append(f"host{i} IN A 192.0.2.{i % 250 + 1}")
    return "\n".join(lines) + "\n"


def make_dataset(directory: Path, entries: int, seed: int = 5) -> Dataset:
    """Write the zone, the blocklist (`entries` names) and the query files."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    zone_file = directory / f"{ZONE}.zone"
    zone_file.write_text(zone_text(), encoding="ascii")
    blocklist = [blocked_name(i) for i in range(entries)]
    domains_file = directory / "blocklist.txt"
    domains_file.write_text("\n".join(blocklist) + "\n", encoding="ascii")
    asked_blocked = [blocked_name(rng.randrange(entries)) for _ in range(BLOCKED_ASKED)]
    others = [(f"nx{i}.{ZONE}", "A") for i in range(OTHER_SET // 2)] + [
        (allowed_name(i), "AAAA") for i in range(OTHER_SET // 2)
    ]

    def pick(miss_share: float, serial: list[int]) -> tuple[str, str]:
        r = rng.random()
        if r < miss_share:
            serial[0] += 1
            return f"q{serial[0]}.new.{ZONE}", "A"
        r = rng.random()
        if r < 0.8:
            return allowed_name(rng.randrange(WORKING_SET)), "A"
        if r < 0.9:
            return rng.choice(asked_blocked), "A"
        return rng.choice(others)

    def write(path: Path, miss_share: float) -> Path:
        serial = [0]
        with path.open("w", encoding="ascii") as out:
            for _ in range(QUERIES):
                name, qtype = pick(miss_share, serial)
                out.write(f"{name} {qtype}\n")
        return path

    mix_file = write(directory / "mix.txt", 0.0)
    miss_file = write(directory / "miss.txt", 0.5)
    warm_file = directory / "warm.txt"
    seen = [f"{allowed_name(i)} A" for i in range(WORKING_SET)]
    seen += [f"{n} A" for n in dict.fromkeys(asked_blocked)]
    seen += [f"{n} {t}" for n, t in others]
    warm_file.write_text("\n".join(seen) + "\n", encoding="ascii")
    expressions_file = directory / "expressions"
    expressions_file.write_text("\n".join(EXPRESSIONS) + "\n", encoding="ascii")
    return Dataset(directory, zone_file, blocklist, domains_file, mix_file, miss_file, warm_file,
                   expressions_file)


def unbound_local_zones(names: list[str], path: Path) -> Path:
    """Unbound: `local-zone: "name." always_nxdomain` (blocks the name and below)."""
    with path.open("w", encoding="ascii") as out:
        for name in names:
            out.write(f'local-zone: "{name}." always_nxdomain\n')
    return path


def dnsmasq_addresses(names: list[str], path: Path) -> Path:
    """dnsmasq: `address=/name/` answers NXDOMAIN for the name and below."""
    with path.open("w", encoding="ascii") as out:
        for name in names:
            out.write(f"address=/{name}/\n")
    return path


def dnsdist_lua(names: list[str], path: Path) -> Path:
    """dnsdist: a SuffixMatchNode filled from a plain file by Lua at start-up."""
    listing = path.with_suffix(".names")
    listing.write_text("\n".join(names) + "\n", encoding="ascii")
    path.write_text(
        f"""blocked = newSuffixMatchNode()
for line in io.lines("{listing}") do blocked:add(line) end
addAction(SuffixMatchNodeRule(blocked), RCodeAction(DNSRCode.NXDOMAIN))
""",
        encoding="ascii",
    )
    return path
