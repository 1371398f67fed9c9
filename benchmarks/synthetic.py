"""Deterministic synthetic lists and query mixes for benchmarks (real lists are too small)."""

from __future__ import annotations

import random
from pathlib import Path

TLDS = ["com", "net", "org", "info", "xyz", "top", "ru", "de", "fr", "co.uk", "com.br", "io"]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "net",
    "web",
    "shop",
    "bet",
    "play",
    "cam",
    "tube",
    "star",
    "win",
    "max",
    "go",
    "pro",
    "sun",
    "vip",
    "club",
    "hot",
    "top",
    "zen",
    "rex",
    "vid",
    "fun",
]


def synthetic_names(count: int, seed: int = 1) -> list[str]:
    """`count` distinct registrable-looking names, a fifth of them with a subdomain."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        name = f"{word}{rng.randint(0, 99999)}.{rng.choice(TLDS)}"
        if rng.random() < 0.2:
            name = f"{rng.choice(['www', 'cdn', 'm', 'api', 'static'])}.{name}"
        names.add(name)
    return sorted(names, key=lambda _: rng.random())


def write_list(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


def query_mix(listed: list[str], count: int, hit_ratio: float = 0.2, seed: int = 2) -> list[str]:
    """Queries: a share are subdomains of listed names, the rest unlisted names."""
    rng = random.Random(seed)
    unlisted = synthetic_names(count, seed=seed + 1000)
    out = []
    for i in range(count):
        if rng.random() < hit_ratio:
            out.append(f"{rng.choice(['www', 'a.b', 'img'])}.{rng.choice(listed)}")
        else:
            out.append(unlisted[i])
    return out


def set_baseline_check(table: set[str], name: str) -> bool:
    """The naive baseline: a Python set of names and a suffix walk over the labels."""
    name = name.strip().lower().rstrip(".")
    labels = name.split(".")
    return any(".".join(labels[i:]) in table for i in range(len(labels)))
