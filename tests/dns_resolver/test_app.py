"""Unit tests for dns_resolver.app: building the pipeline from a Config, reloads."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from pathlib import Path

from dns_resolver.app import App, build_resolver, list_entries
from fdconfig import (
    AccessConfig,
    Address,
    BlockingConfig,
    CacheConfig,
    Config,
    ListConfig,
    UpstreamConfig,
)
from tests.dns_resolver.fakes import FakeMatcher


def config(**kwargs: object) -> Config:
    base = Config(upstream=UpstreamConfig(servers=(Address("127.0.0.1", 53),)))
    return replace(base, **kwargs)  # type: ignore[arg-type]


def test_build_resolver_follows_the_config() -> None:
    cfg = config(
        cache=CacheConfig(enabled=False),
        blocking=BlockingConfig(mode="null", ttl=9, inspect_answers=False),
        access=AccessConfig(allow=(ipaddress.ip_network("10.0.0.0/8"),), deny=()),
        upstream=UpstreamConfig(servers=(Address("::1", 5300),), strategy="parallel",
                                timeout=0.7),
    )
    resolver = build_resolver(cfg, FakeMatcher())
    assert resolver.cache is None
    assert resolver.blocker.mode == "null" and resolver.blocker.ttl == 9
    assert not resolver.inspect_answers
    assert resolver.acl.allowed("10.1.1.1") and not resolver.acl.allowed("127.0.0.1")
    fwd = resolver.forwarder
    assert fwd.strategy == "parallel" and fwd.timeout == 0.7
    assert [u.name for u in fwd.upstreams] == ["[::1]:5300"]
    assert build_resolver(config(), FakeMatcher()).cache is not None


def test_reload_swaps_matcher_or_keeps_the_old_one(tmp_path: Path) -> None:
    listed = tmp_path / "l.txt"
    listed.write_text("blocked.example\n")
    cfg = config(lists=(ListConfig(path=str(listed), name="l", category="adult"),))
    app = App(cfg)
    old = FakeMatcher()
    app.resolver = build_resolver(cfg, old)

    async def scenario() -> tuple[bool, bool]:
        ok = await app.reload()
        listed.unlink()
        failed = await app.reload()
        return ok, failed

    ok, failed = asyncio.run(scenario())
    assert ok and not failed
    matcher = app.resolver.matcher
    assert matcher is not old and matcher.check("x.blocked.example").blocked
    assert list_entries(matcher) == {"l": 1}
