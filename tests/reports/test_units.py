"""Small pieces: config sections, the override file and matcher, the rate limiter, the
audit export and the submission rules."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path

import pytest

from fdconfig import ConfigError, load_config
from filtercore.categories import CategoryMap
from filtercore.errors import FilterError, InvalidNameError
from filtercore.verdict import NO_MATCH, Action, Verdict
from reports.export import export_audit
from reports.overrides import LayeredMatcher, OverrideMatcher, render_overrides, write_overrides
from reports.ratelimit import RateLimiter
from reports.submission import ValidationError, parse_decision, parse_report_target
from reports.tokens import role_allows

CATEGORIES = CategoryMap.load()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_config_defaults_and_values(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ""))
    assert not config.admin.enabled and str(config.admin.listen) == "127.0.0.1:8081"
    assert config.reports.form_url == "http://127.0.0.1:8081/api/reports"
    assert config.reports.page_url == "http://127.0.0.1:8081/report"
    config = load_config(
        write_config(
            tmp_path,
            '[admin]\nenabled = true\nlisten = "[::1]:9000"\n'
            '[reports]\ndatabase = "postgresql://u@h/db"\nburst = 3\nallow = ["10.0.0.0/8"]\n',
        )
    )
    assert config.admin.enabled and config.reports.form_url == "http://[::1]:9000/api/reports"
    assert config.reports.burst == 3 and str(config.reports.allow[0]) == "10.0.0.0/8"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[admin]\nlisten = "localhost:1"', "admin.listen"),
        ("[admin]\nenabled = 1", "admin.enabled"),
        ("[admin]\nport = 1", "admin.port"),
        ('[reports]\ndatabase = "reports.db"', "reports.database"),
        ('[reports]\nallow = ["nope"]', "reports.allow[0]"),
        ("[reports]\nburst = 0", "reports.burst"),
        ("[reports]\nrate_per_minute = -1", "reports.rate_per_minute"),
        ('[reports]\nform_url = "ftp://x"', "reports.form_url"),
        ("[reports]\ncolour = 1", "reports.colour"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, text))
    assert err.value.key == key and err.value.path.endswith("c.toml")


def test_override_file_round_trip(tmp_path: Path) -> None:
    reason = 'quote " back\\slash\nnew line \x7f \x01 😀 ünï'
    rows = [
        {
            "host": "bad.example",
            "action": "block",
            "category": "adult",
            "reason": reason,
            "decided_by": "alice (token 1)",
            "report_id": 3,
            "updated_at": "2026-01-01T00:00:00Z",
        },
        {
            "host": "ok.bad.example",
            "action": "allow",
            "category": None,
            "reason": "fine",
            "decided_by": "bob",
            "report_id": None,
            "updated_at": "2026-01-01T00:00:00Z",
        },
    ]
    path = tmp_path / "overrides.toml"
    write_overrides(path, rows)
    parsed = tomllib.loads(path.read_text())["override"]
    assert parsed[0]["reason"] == reason and parsed[0]["report_id"] == 3
    assert "category" not in parsed[1]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    matcher = OverrideMatcher.load(path)
    assert len(matcher) == 2
    hit = matcher.check("WWW.Bad.Example.")
    assert hit is not None and hit.action is Action.BLOCK and hit.list == "overrides"
    assert hit.category == "adult" and hit.matched == "bad.example" and hit.line == 1
    assert matcher.check("ok.bad.example").action is Action.ALLOW  # the most specific wins
    assert matcher.check("x.ok.bad.example").action is Action.ALLOW
    assert matcher.check("notbad.example") is None
    with pytest.raises(InvalidNameError):
        matcher.check("a..b")
    assert len(OverrideMatcher.load(tmp_path / "missing.toml")) == 0
    (tmp_path / "broken.toml").write_text("[[override]]\nhost = 1\naction = 'block'\n")
    with pytest.raises(FilterError):
        OverrideMatcher.load(tmp_path / "broken.toml")
    assert render_overrides([]).startswith("# filterdns local overrides")


class FakeMatcher:
    def __init__(self) -> None:
        self.listed = Verdict(Action.BLOCK, category="adult", list="base", matched="x.example")
        self._core = object()

    def check(self, name: str, categories: object = None) -> Verdict:
        return self.listed if name.endswith("x.example") else NO_MATCH

    def check_url(self, url: str, categories: object = None) -> Verdict:
        return self.check(url.split("/")[2])

    def stats(self) -> dict:
        return {"entries": 1}


def test_layered_matcher() -> None:
    overrides = OverrideMatcher(
        [
            {"host": "x.example", "action": "allow"},
            {"host": "g.example", "action": "block", "category": "gambling"},
        ]
    )
    layered = LayeredMatcher(overrides, FakeMatcher())
    assert layered.check("a.x.example").action is Action.ALLOW
    assert layered.check_url("http://a.x.example/p").action is Action.ALLOW
    assert layered.check("g.example").list == "overrides"
    # Under a policy that does not block gambling, the block override is passed over.
    assert layered.check("g.example", categories=("adult",)) is NO_MATCH
    assert layered.check("g.example", categories=("gambling",)).blocked
    assert layered.check_url("http://[::1]/x").action is Action.NONE  # no override names an IP
    assert layered.stats() == {"entries": 1}
    # The fast path must not see the base table, or it would skip the overrides.
    assert not hasattr(layered, "_core")


def test_rate_limiter_refills_and_bounds_memory() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, max_clients=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.retry_after("a") == pytest.approx(1.0)
    now[0] = 1.0
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")  # another client has its own bucket
    for i in range(10):
        limiter.allow(f"spray{i}")
    assert len(limiter._buckets) <= 3  # noqa: SLF001


def test_audit_export_csv_and_json() -> None:
    records = [
        {"time": "t1", "kind": "list-update", "source": "ut1", "result": "applied", "added": 5},
        {
            "time": "t2",
            "kind": "review-decision",
            "reviewer": "alice",
            "action": "block",
            "host": "x.example",
            "category": "adult",
            "reason": '=HYPERLINK("evil")',
        },
    ]
    rows = list(csv.DictReader(io.StringIO(export_audit(records, "csv"))))
    assert rows[0]["who"] == "ut1" and rows[0]["action"] == "applied"
    assert json.loads(rows[0]["details"]) == {"added": 5}
    assert rows[1]["reason"].startswith("'=")  # no formula injection into a spreadsheet
    assert json.loads(export_audit(records, "json")) == records
    assert json.loads(export_audit([], "json")) == []
    with pytest.raises(ValueError):
        export_audit(records, "xml")


def test_targets_and_decisions() -> None:
    assert parse_report_target("https://user@Sub.Example.COM:8443/A/b?q#f") == (
        "sub.example.com/a/b?q",
        "sub.example.com",
    )
    assert parse_report_target("bücher.example") == ("xn--bcher-kva.example",) * 2
    assert parse_report_target("http://x.example/") == ("x.example", "x.example")
    with pytest.raises(ValidationError):
        parse_decision({"action": "allow"}, CATEGORIES)  # no reason
    assert (
        parse_decision({"action": "block", "category": "porn", "reason": "r"}, CATEGORIES).category
        == "adult"
    )
    assert role_allows("admin", "reviewer") and not role_allows("reviewer", "admin")


def test_example_config_loads() -> None:
    from tests.dns_resolver.harness import REPO_ROOT

    config = load_config(REPO_ROOT / "examples" / "reports.toml")
    assert config.admin.enabled and config.reports.database == ""
    assert config.server.data_dir == "reports-data"


def test_resolver_keeps_overrides_across_list_reloads() -> None:
    from dns_resolver.resolver import Resolver
    from dns_resolver.upstreams.upstream import Forwarder

    base, reloaded = FakeMatcher(), FakeMatcher()
    resolver = Resolver(base, Forwarder([("127.0.0.1", 9)]))
    resolver.set_overrides(OverrideMatcher([{"host": "a.x.example", "action": "allow"}]))
    assert resolver.matcher.check("a.x.example").action is Action.ALLOW
    assert resolver.matcher.check("b.x.example").list == "base"
    resolver.replace_matcher(reloaded)  # a list reload
    assert resolver.base_matcher is reloaded
    assert resolver.matcher.check("a.x.example").action is Action.ALLOW
    resolver.set_overrides(OverrideMatcher())  # no overrides: the lists' matcher itself
    assert resolver.matcher is reloaded
