"""Replay a realistic stream of cache misses through the newly-observed-domains tracker and
say which leads it raises and why (docs/leads.md).

    python -m benchmarks.leads_replay --ut1 PATH/TO/ut1 [--seed 1] [--json out.json]

The stream is built from a UT1 category tree:

- **Known domains**: domains of the background categories (games, social networks,
  shorteners) are put in the filters first, as the days before the window, and asked again
  during it.
- **New benign domains**: the white categories (`liste_blanche`, `child`,
  `sexual_education`, `chat`), never seen before the window.
- **New suspect domains**: a share of each black category (gambling, dating, warez, ...)
  held out of the lists the matcher loads: sites the lists do not know yet. The rest of the
  category is loaded, as a provider would have it.
- Each new domain gets a number of distinct client networks from a heavy-tailed (Zipf)
  draw, and a few queries per network; known domains are asked in between.

The matcher holds the loaded black categories and, as suspect-only text rules, the adult
category's `very_restrictive_expression`; a sample of the loaded gambling domains stands
for reviewers' block overrides (the look-alike signal). Answers are not fetched (no
network), so the CNAME-target and answer-address signals do not take part here; the end-
to-end test covers them. The report counts the leads by signal and by origin (suspect or
benign), and the tracker's cost per miss record in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dns_resolver.observability.observed import Lead, Tracker, registrable
from fdconfig.leads import LeadsConfig
from fdconfig.observed import ObservedConfig
from filtercore import ListSpec, Matcher
from reports.overrides import LayeredMatcher, OverrideMatcher

# UT1's "usage" files: these categories are black, the WHITE ones white. UT1's white
# categories are small, so the traffic of known domains comes from BACKGROUND categories
# (sites a child policy does not block: games, social networks, shorteners).
BLACK = ("gambling", "dating", "warez", "drogue", "agressif", "vpn", "cryptojacking",
         "stalkerware", "sect", "hacking", "lingerie", "mixed_adult", "dangerous_material")
WHITE = ("liste_blanche", "child", "sexual_education", "chat")
BACKGROUND = ("games", "social_networks", "shortener")


def read_domains(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("#")]


def build(ut1: Path, rng: random.Random, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    new_white = sorted({d for c in WHITE for d in read_domains(ut1 / c / "domains")})
    background = [d for c in BACKGROUND for d in read_domains(ut1 / c / "domains")]
    known = rng.sample(background, min(args.known, len(background)))
    held: dict[str, list[str]] = {}
    specs = []
    for category in BLACK:
        domains = read_domains(ut1 / category / "domains")
        rng.shuffle(domains)
        cut = int(len(domains) * args.held_out)
        held[category] = domains[:cut][: args.new_suspect_per_category]
        listed = work / f"{category}.txt"
        listed.write_text("\n".join(domains[cut:]) + "\n")
        specs.append(ListSpec(str(listed), category=category, format="domains"))
    expression = ut1 / "adult" / "very_restrictive_expression"
    if expression.is_file():
        specs.append(ListSpec(str(expression), category="adult", format="expressions"))
    matcher = Matcher.from_lists(specs)
    gambling = read_domains(work / "gambling.txt")
    blocked = rng.sample(gambling, min(args.overrides, len(gambling)))
    overrides = OverrideMatcher(
        [{"host": h, "action": "block", "category": "gambling"} for h in blocked]
    )
    return {
        "matcher": LayeredMatcher(overrides, matcher),
        "known": known,
        "new_white": new_white,
        "held": held,
    }


def clients(rng: random.Random, cap: int) -> int:
    """Distinct client networks of a new domain: mostly a handful, a few very many."""
    return min(cap, int(rng.paretovariate(1.1)))


def stream(
    parts: dict[str, Any], rng: random.Random, networks: int
) -> tuple[list[tuple[str, int]], dict]:
    origin: dict[str, str] = {}
    events: list[tuple[str, int]] = []
    new = [(d, "benign") for d in parts["new_white"]]
    new += [(d, f"suspect:{c}") for c, ds in parts["held"].items() for d in ds]
    for domain, kind in new:
        origin[registrable(domain) or domain] = kind
        for network in rng.sample(range(networks), clients(rng, networks)):
            events += [(f"www.{domain}", network)] * rng.randint(1, 3)
    known = parts["known"]
    events += [(f"www.{rng.choice(known)}", rng.randrange(networks)) for _ in range(len(events))]
    rng.shuffle(events)
    return events, origin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ut1", type=Path, required=True, help="a UT1 category tree")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--known", type=int, default=20_000, help="white domains seen before")
    parser.add_argument("--new-suspect-per-category", type=int, default=400)
    parser.add_argument("--held-out", type=float, default=0.2,
                        help="share of each black category the lists do not know")
    parser.add_argument("--overrides", type=int, default=500)
    parser.add_argument("--networks", type=int, default=5_000, help="client /24 networks")
    parser.add_argument("--min-clients", type=int, default=20)
    parser.add_argument("--max-per-day", type=int, default=100)
    parser.add_argument("--no-require-signal", action="store_true",
                        help="raise on clients alone ([leads] require_signal = false)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        parts = build(args.ut1, rng, args, Path(tmp))
    raised: list[Lead] = []

    async def keep(lead: Lead) -> None:
        raised.append(lead)

    leads = LeadsConfig(min_clients=args.min_clients, max_per_day=args.max_per_day,
                        require_signal=not args.no_require_signal)
    tracker = Tracker(ObservedConfig(enabled=True), leads, lambda: parts["matcher"],
                      raise_lead=keep)
    for domain in parts["known"]:  # the days before the window
        tracker.filters.add(registrable(domain) or domain)
    records, origin = stream(parts, rng, args.networks)
    started = time.process_time()  # CPU time: the machine may be shared
    for name, network in records:
        tracker.observe(name, network)
    fed = time.process_time() - started
    asyncio.run(tracker.review())
    by_signal = Counter(s["signal"] for lead in raised for s in lead.evidence["signals"])
    by_origin = Counter(origin.get(lead.domain, "other").split(":")[0] for lead in raised)
    by_category = Counter(lead.category for lead in raised)
    eligible = Counter(
        origin.get(c.domain, "other").split(":")[0]
        for c in tracker.candidates.values()
        if len(c.networks) >= args.min_clients
    )
    out = {
        "miss_records": len(records),
        "python_cpu_us_per_miss": round(fed / len(records) * 1e6, 3),
        "require_signal": leads.require_signal,
        "newly_observed": tracker.new,
        "new_domains_in_stream": len(origin),
        "reached_min_clients": dict(eligible),
        "leads": len(raised),
        "leads_by_origin": dict(by_origin),
        "leads_by_signal": dict(by_signal),
        "leads_by_category": {str(k): v for k, v in by_category.items()},
        "examined_without_signal": tracker.not_raised,
        "over_daily_cap": tracker.over_budget,
        "filter_bytes": tracker.filters.nbytes,
        "filter_capacity": tracker.filters.capacity,
        "predicted_false_positive_rate": round(tracker.filters.predicted_false_positive_rate(), 5),
        "examples": [
            {"domain": lead.domain, "category": lead.category,
             "client_networks": lead.evidence["client_networks"],
             "signals": [s["detail"] for s in lead.evidence["signals"]]}
            for lead in raised[:8]
        ],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
