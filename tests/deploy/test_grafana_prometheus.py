"""deploy/grafana/filterdns.json against a real Prometheus scraping a real filterdns.

filterdns runs through the resolver harness (NSD as upstream, behind a first upstream that
answers SERVFAIL, so the upstream error series have data); Prometheus (Debian's
`prometheus`, run directly on 127.0.0.1 with its own storage folder) scrapes it every
second. After a few queries (allowed, cached, blocked) and some scrapes, every `filterdns_`
metric the resolver exports must be in Prometheus, and every expression of every panel of
the dashboard must return data through the HTTP API (`/api/v1/query`), with Grafana's
variables replaced by what Grafana would send.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dns_resolver.harness import (
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    free_port,
)
from tests.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "filterdns.json"
# What Grafana substitutes: all instances, and a rate window covering the test's scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


class Prometheus:
    """A Prometheus process on 127.0.0.1 with a generated config and its own storage."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: install the Debian package `prometheus`"
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: filterdns\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read()) if path.startswith("/api/") else response.read()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                self.get("/-/ready")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout} s:\n{self.log_path.read_text()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def scrapes(self, job: str = "filterdns") -> float:
        """How many scrapes of the job have succeeded so far (summed over targets)."""
        result = self.query(f'sum(count_over_time(up{{job="{job}"}}[10m]))')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_scrapes(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` more scrapes have happened than now."""
        start = self.scrapes()
        deadline = time.monotonic() + timeout
        while self.scrapes() < start + count:
            assert time.monotonic() < deadline, "prometheus did not scrape in time"
            time.sleep(0.25)

    def stop(self) -> None:
        terminate(self.proc)


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every target of every panel."""
    data = json.loads(DASHBOARD.read_text())
    found = []
    for panel in data["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unhandled Grafana variable in {expr!r}"
    return expr


@pytest.fixture
def scraped_filterdns(
    filterdns_on_nsd: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
    fault_upstream: FaultUpstream,
    tmp_path: Path,
) -> Iterator[tuple[ServerProcess, Prometheus]]:
    fault_upstream.mode = "servfail"
    server = filterdns_on_nsd(
        {
            # Failover from the SERVFAIL upstream to NSD: every forwarded query counts
            # an upstream error, then is answered. Never marked dead, so errors go on.
            "upstream": {
                "servers": [fault_upstream.upstream, nsd_upstream.upstream],
                "strategy": "failover",
                "max_failures": 1000,
            }
        }
    )
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{server.metrics_port}"])
    try:
        prometheus.wait_ready()
        prometheus.wait_for_scrapes(2)
        yield server, prometheus
    finally:
        prometheus.stop()


def test_dashboard_is_valid_grafana_json() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "filterdns" and data["panels"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in data["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    titles = " ".join(p["title"].lower() for p in data["panels"])
    for topic in ("result", "category", "quantile", "cache hit", "upstream health", "list age"):
        assert topic in titles, topic


def test_prometheus_has_every_metric_and_dashboard_query(
    scraped_filterdns: tuple[ServerProcess, Prometheus],
) -> None:
    server, prometheus = scraped_filterdns
    # Labelled series (per upstream, per category) appear at their first event; a rate
    # needs a sample before the events it counts, so each kind of event happens once,
    # Prometheus scrapes, and then the counted queries follow.
    for name, qtype in [(TestZone.WWW, "A"), (TestZone.BLOCKED, "A")]:
        assert server.dig(name, qtype).status is not None
    prometheus.wait_for_scrapes(2)
    for name, qtype in [
        (TestZone.WWW, "A"),  # cached
        (TestZone.MX, "MX"),  # allowed: forwarded upstream
        (TestZone.TXT, "TXT"),
        (TestZone.BLOCKED, "A"),  # blocked by the test list (category adult)
        (TestZone.BLOCKED_SUB, "AAAA"),
    ]:
        assert server.dig(name, qtype).status is not None
    assert server.metric("filterdns_queries_total", result="blocked") >= 3
    assert server.metric("filterdns_queries_total", result="cached") >= 1
    prometheus.wait_for_scrapes(3)

    # Every metric family filterdns exports with samples is stored by Prometheus (a
    # labelled family with no event yet, such as URL-source updates here, has none).
    exported = {
        line.split("{")[0].split()[0].removesuffix("_total").removesuffix("_created")
        for line in server.metrics_text().splitlines()
        if line.startswith("filterdns_")
    }
    stored = {
        row["metric"]["__name__"]
        for row in prometheus.query('{__name__=~"filterdns_.+"}')
    }
    for family in exported:
        assert any(name == family or name.startswith(family + "_") for name in stored), family

    # Every dashboard expression returns data, and some of it is a number.
    empty = []
    for title, expr in dashboard_expressions():
        rows = prometheus.query(substitute(expr))
        values = [float(row["value"][1]) for row in rows]
        if not values or all(math.isnan(v) for v in values):
            empty.append(f"{title}: {expr} -> {rows}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # And the data is what was sent: blocks of the test list's category, both upstreams.
    categories = {r["metric"].get("category") for r in prometheus.query(
        "sum by (category) (filterdns_blocks_total)")}  # fmt: skip
    assert "adult" in categories
    health = {r["metric"]["upstream"] for r in prometheus.query("filterdns_upstream_healthy")}
    assert len(health) == 2
