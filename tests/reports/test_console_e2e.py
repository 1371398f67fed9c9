"""The console against a real `filterdns serve` (NSD upstream, dig from loopback source
addresses): the overview counts the queries just sent, the query log finds a block with
its rule, a pause of the child's policy lets its queries through within 1 s and ends by
itself, and a viewer cannot pause anything.

The pause uses `minutes=0.05` (3 s): the API takes fractions of a minute for this."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from listsync.audit import AuditLog
from tests.dns_resolver.fast.test_integration_forward_fastpath import corp_nsd
from tests.dns_resolver.harness import (
    NsdServer,
    ServerProcess,
    TestZone,
    eventually,
    free_port,
)
from tests.dns_resolver.steps.test_integration_local import DC_A
from tests.reports.test_console import login, page_csrf
from tests.reports.test_e2e import reviewer_token

CHILD = "127.0.0.2"
TEEN = "127.0.0.3"
BLOCKED = TestZone.BLOCKED.rstrip(".")
WWW = TestZone.WWW.rstrip(".")


def console_config(tmp_path: Path) -> dict:
    return {
        "server": {"data_dir": "data"},
        "admin": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
        "blocking": {"mode": "nxdomain"},
        "querylog": {"enabled": True, "path": str(tmp_path / "q.log"), "anonymize": "none"},
        "console": {"enabled": True},
        "policies": {"child": {"clients": [f"{CHILD}/32"], "block": ["adult"]}},
    }


class Api:
    """A logged-in console session as a script would hold it (bearer token)."""

    def __init__(self, server: ServerProcess, role: str) -> None:
        self.base = "http://" + server.config["admin"]["listen"]
        self.token = reviewer_token(server, role, f"{role}-user")
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(self.base + path, params=params, headers=self.headers, timeout=10)

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.base + path, json=body, headers=self.headers, timeout=10)


def test_overview_querylog_pause_and_roles(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = filterdns_on_nsd(console_config(tmp_path))
    admin = Api(server, "admin")
    viewer = Api(server, "viewer")

    # Queries from the child: 3 allowed, 2 blocked by the test list's rule.
    for _ in range(3):
        assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"
    for _ in range(2):
        assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"

    def counted() -> bool:
        return admin.get("/api/stats", window="1h").json().get("queries") == 5

    assert eventually(counted, timeout=5)
    stats = admin.get("/api/stats", window="1h").json()
    assert stats["blocked"] == 2 and stats["by_result"]["blocked"] == 2
    assert {"name": BLOCKED, "count": 2} in stats["top_blocked"]
    assert stats["by_policy"] == {"child": 5}
    assert stats["rows"]["querylog_dropped"] == 0 and stats["rows"]["store_written"] == 5

    # The overview page, logged in with the form, shows the same count.
    browser = login_client(admin)
    page = browser.get("/")
    assert page.status_code == 200 and "<dd id=queries-total>5</dd>" in page.text

    # The query log finds the block with its rule, list and policy.
    rows = admin.get("/api/querylog", name="blocked.filterdns", result="blocked").json()["rows"]
    assert len(rows) == 2
    assert rows[0]["rule"] and rows[0]["list"] == "test" and rows[0]["category"] == "adult"
    assert rows[0]["policy"] == "child" and rows[0]["client_why"] == "cidr"
    assert rows[0]["client"] == CHILD
    html = browser.get("/queries", params={"name": "blocked.filterdns"}).text
    assert f"<code>{rows[0]['rule']}</code>" in html

    # A viewer may not pause; an admin may, and it ends by itself.
    assert viewer.post("/api/policies/child/pause", {"minutes": 0.05}).status_code == 403
    assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"
    paused = admin.post("/api/policies/child/pause", {"minutes": 0.05})
    assert paused.status_code == 200 and paused.json()["paused_until"]
    started = time.monotonic()
    assert eventually(lambda: server.dig(BLOCKED, "A", "-b", CHILD).status == "NOERROR", 1.0)
    assert time.monotonic() - started <= 1.0
    assert "paused until" in browser.get("/policies").text
    assert eventually(lambda: server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN", 6)
    assert admin.get("/api/policies").json()["policies"][0]["paused_until"] is None
    audit = admin.get("/api/audit", kind="policy-switch").json()["records"]
    assert audit[-1]["action"] == "pause" and "admin-user" in audit[-1]["reviewer"]

    # The clients page knows the child, its policy and why.
    clients = admin.get("/api/clients").json()["clients"]
    child = next(c for c in clients if c["client"] == CHILD)
    assert child["policy"] == "child" and child["why"] == "cidr"
    assert f"/queries?client={CHILD}" in browser.get("/clients").text

    # The lists page: the test list with its entries and last update (an audit record as
    # `filterdns lists update` writes it); a viewer may look, not update.
    AuditLog(server.config_path.parent / "data" / "audit.jsonl").append(
        {"kind": "list-update", "source": "test", "result": "applied"}
    )
    lists = viewer.get("/api/lists").json()["lists"]
    assert lists[0]["last_result"] == "applied"
    assert [(i["name"], i["category"], i["malformed"]) for i in lists] == [("test", "adult", 0)]
    assert lists[0]["entries"] > 0
    page = browser.get("/lists").text
    assert "Update now" in page and "test: applied" in page


def login_client(api: Api) -> httpx.Client:
    class Thread:  # what `login` needs of an ApiThread: its URL
        url = api.base

    return login(Thread(), api.token)  # type: ignore[arg-type]


def test_block_now_is_admin_only_and_shows(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = console_config(tmp_path)
    config["policies"]["child"]["block"] = []
    server = filterdns_on_nsd(config)
    admin = Api(server, "admin")
    assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NOERROR"
    browser = login_client(admin)
    r = browser.post(
        "/api/policies/child/block",
        data={"category": "adult", "minutes": "5", "csrf": page_csrf(browser, "/policies")},
    )
    assert r.status_code == 303
    assert eventually(lambda: server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN", 1.0)
    assert "adult blocked until" in browser.get("/policies").text
    viewer = Api(server, "viewer")
    refused = viewer.post("/api/policies/child/block", {"category": "adult", "minutes": 1})
    assert refused.status_code == 403


def test_rows_say_what_decided_and_which_upstream_answered(
    filterdns_on_nsd: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    """Rows written by C (forwarded, cached, blocked again) and by Python (the first block,
    a block-now) say which step decided and which upstream answered; with hashed clients
    the policy is still the client's own, and no address reaches the disk."""
    config = console_config(tmp_path)
    config["querylog"]["anonymize"] = "hash"
    config["policies"]["teen"] = {"clients": [f"{TEEN}/32"], "block": []}
    server = filterdns_on_nsd(config)
    admin = Api(server, "admin")
    for _ in range(2):
        assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"
        assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"
    assert admin.post("/api/policies/teen/block", {"category": "adult", "minutes": 5}).is_success
    assert eventually(lambda: server.dig(BLOCKED, "A", "-b", TEEN).status == "NXDOMAIN", 1.0)

    def rows() -> list[dict]:
        return admin.get("/api/querylog", limit=100).json()["rows"][::-1]  # oldest first

    assert eventually(lambda: len(rows()) >= 5, 5)
    found = rows()
    child = [r for r in found if r["policy"] == "child"]
    assert [(r["qname"], r["result"], r["decided_by"]) for r in child] == [
        (WWW, "allowed", "upstream"),
        (BLOCKED, "blocked", "list"),
        (WWW, "cached", "cache"),
        (BLOCKED, "blocked", "list"),
    ]
    assert child[0]["upstream"] == nsd_upstream.upstream and child[0]["upstream_ms"] > 0
    assert all(r["upstream"] is None for r in child[1:])
    assert all(r["client_why"] == "cidr" and len(r["client"]) == 16 for r in child)
    assert len({r["client"] for r in child}) == 1 and all(r["rule"] for r in child[1::2])
    teen = [r for r in found if r["policy"] == "teen" and r["result"] == "blocked"]
    assert teen and all(r["decided_by"] == "block-now" for r in teen)
    page = login_client(admin).get("/queries").text
    assert "<code>block-now</code>" in page and f"{nsd_upstream.upstream} (" in page
    text = (tmp_path / "q.log").read_text()
    assert CHILD not in text and TEEN not in text


def test_rows_of_a_forward_rule_name_the_rules_upstream(
    filterdns_on_nsd: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    """A name C forwards to a `[[forward]]` rule's servers is logged with that set's
    upstream, not the default set's (C's lines do not say which set answered)."""
    corp = corp_nsd(tmp_path / "corp")
    try:
        config = console_config(tmp_path)
        config["forward"] = [{"domains": ["corp.test"], "servers": [corp.upstream]}]
        config["policies"]["staff"] = {"clients": [f"{TEEN}/32"], "block": []}
        server = filterdns_on_nsd(config)
        admin = Api(server, "admin")
        assert server.dig("dc.corp.test", "A", "-b", TEEN).rdata("A") == [DC_A]
        assert server.dig("dc.corp.test", "A", "-b", CHILD).rdata("A") == [DC_A]
        assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"
        # All three were forwarded by C (the start-up probe aside, nothing went to Python).
        assert server.metric("filterdns_fastpath_answers_total") == 3

        def forwarded() -> dict[tuple[str, str], str | None]:
            rows = admin.get("/api/querylog", result="allowed").json()["rows"]
            return {(r["qname"], r["policy"]): r["upstream"] for r in rows}

        assert eventually(lambda: len(forwarded()) == 3, 5)
        assert forwarded() == {
            ("dc.corp.test", "staff"): corp.upstream,
            ("dc.corp.test", "child"): corp.upstream,
            (WWW, "child"): nsd_upstream.upstream,
        }
    finally:
        corp.stop()


def test_rows_name_the_transport_c_answered_on(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """C's TCP and UDP answers (a cache hit each) are stored with their own transport."""
    server = filterdns_on_nsd(console_config(tmp_path))
    admin = Api(server, "admin")
    assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"
    assert server.dig(WWW, "A", "-b", CHILD, "+tcp").status == "NOERROR"
    assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"

    def cached() -> list[str]:
        rows = admin.get("/api/querylog", result="cached").json()["rows"]
        return sorted(r["protocol"] for r in rows)

    assert eventually(lambda: len(cached()) == 2, 5)
    assert cached() == ["tcp", "udp"]
