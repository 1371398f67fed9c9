"""Shared helpers for the policy tests: lists, configs and an in-process resolver."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dns.message

from dns_resolver.app import build_matcher, build_policies, build_resolver
from dns_resolver.resolver import Pending, Resolver
from fdconfig import Config, load_config

PARIS = ZoneInfo("Europe/Paris")


class Clock:
    """An injected clock: tests set `now`."""

    def __init__(self, when: float) -> None:
        self.now = when

    def __call__(self) -> float:
        return self.now


def paris(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """A Europe/Paris wall-clock time in November 2026 as a timestamp (the 23rd is a Monday)."""
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=PARIS).timestamp()


LISTS = {
    "adult.txt": ("adult", ["porn.example", "bad.example"]),
    "games.txt": ("games", ["game.example", "play.example"]),
    "social.txt": ("social", ["friends.example"]),
    "mal.txt": ("malware-phishing", ["mal.example"]),
    "vpn.txt": ("filter-bypass", ["vpn.example"]),
}

LISTS_TOML = "".join(
    f'[[lists]]\npath = "{name}"\ncategory = "{category}"\n\n'
    for name, (category, _) in LISTS.items()
)


def write_lists(folder: Path) -> None:
    for name, (_, names) in LISTS.items():
        (folder / name).write_text("\n".join(names) + "\n", encoding="utf-8")


def make_config(folder: Path, policies_toml: str, upstream: str = "127.0.0.1:1") -> Config:
    """Write the test lists and a config with `policies_toml` to `folder`; load it."""
    write_lists(folder)
    path = folder / "policy.toml"
    path.write_text(
        f'[upstream]\nservers = ["{upstream}"]\n\n{LISTS_TOML}{policies_toml}', encoding="utf-8"
    )
    return load_config(path)


def make_resolver(config: Config, clock: object = None) -> Resolver:
    matcher = build_matcher(config)
    return build_resolver(config, matcher, policies=build_policies(config, matcher, clock=clock))


def ask(
    resolver: Resolver, name: str, client: str = "127.0.0.1", qtype: str = "A", **kw: object
) -> bytes | Pending:
    """`Resolver.handle` for one query (a Pending when it needs the upstream)."""
    kw.setdefault("use_edns", 0)
    wire = dns.message.make_query(name, qtype, **kw).to_wire()  # type: ignore[arg-type]
    out = resolver.handle(wire, client)
    assert out is not None
    return out


def resolve(resolver: Resolver, name: str, client: str = "127.0.0.1", **kw: object) -> bytes:
    """Answer fully (upstream included)."""

    async def go() -> bytes:
        out = ask(resolver, name, client, **kw)
        if isinstance(out, Pending):
            return await resolver.resolve(out)
        return out

    return asyncio.run(go())
