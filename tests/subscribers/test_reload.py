"""A configuration reload that renumbers the policies (one added, the rest reordered) on a
real `filterdns serve`: the serving table stores policy indexes, so it is renumbered with
the reload and every subscriber keeps its named policy, in one process and in workers."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dns_resolver.harness import ServerProcess, eventually, free_port, to_toml
from tests.reports.conftest import filterdns_cli
from tests.subscribers.test_e2e import allowed, blocked, dig_from, subscriber_config, until


def _always(server: ServerProcess, source: str, want: Callable) -> bool:
    # Several asks, so that with workers the kernel's spread reaches each of them.
    return all(want(dig_from(server, source)) for _ in range(8))


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_a_reload_that_renumbers_the_policies_keeps_each_subscribers_policy(
    serve: Callable[[dict], ServerProcess], tmp_path: Path, workers: int
) -> None:
    config = subscriber_config(free_port())
    del config["admin"], config["radius"]
    config["server"]["workers"] = workers
    server = serve(config)
    subs = tmp_path / "subs.jsonl"
    subs.write_text(
        json.dumps({"id": "kid", "policy": "child", "addresses": ["127.0.0.71"]})
        + "\n"
        + json.dumps({"id": "adult", "policy": "default", "addresses": ["127.0.0.72"]})
        + "\n"
    )
    filterdns_cli(
        "subscribers", "import", str(subs), "--quiet", "--config", str(server.config_path)
    )
    until(server, "127.0.0.71", blocked)
    assert _always(server, "127.0.0.71", blocked) and _always(server, "127.0.0.72", allowed)

    # child was index 0, default 1; now teen (blocking nothing) is 0 and child is 2: a
    # table left as it was would serve the child teen's policy.
    config = {**server.config}
    config["policies"] = {
        "teen": {"block": []},
        "default": {"block": []},
        "child": {"block": ["adult"]},
    }
    server.config_path.write_text(to_toml(config), encoding="utf-8")
    server.send_signal(signal.SIGHUP)
    assert eventually(
        lambda: server.metric("filterdns_config_reloads_total", result="applied") == 1,
        timeout=10,
    )
    # Workers apply the configuration on the SIGHUP the supervisor passes on: wait for both.
    assert eventually(
        lambda: "policies changed" in server.stderr_text()
        and server.stderr_text().count("configuration applied") >= workers,
        timeout=10,
    )
    assert _always(server, "127.0.0.71", blocked)
    assert _always(server, "127.0.0.72", allowed)
