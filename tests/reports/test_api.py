"""The admin API over real HTTP (the server in a thread, httpx as the client)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import httpx
import pytest

from reports.api import MAX_BODY
from reports.openapi import openapi_document
from tests.reports.conftest import ApiThread


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(api: ApiThread, **body: object) -> httpx.Response:
    return httpx.post(f"{api.url}/api/reports", json=body, timeout=10)


def test_submit_json_and_merge(api: ApiThread) -> None:
    first = submit(api, target="https://casino.example/play", category="gambling")
    assert first.status_code == 201
    again = submit(api, target="casino.example/play", kind="report")
    assert again.status_code == 201
    assert again.json() == {"id": first.json()["id"], "count": 2, "duplicate": True}


def test_form_post_redirects_to_thanks(api: ApiThread) -> None:
    form = {"target": "blocked.example", "kind": "appeal", "category": "adult", "list": "test"}
    r = httpx.post(f"{api.url}/api/reports", data=form, timeout=10)
    assert r.status_code == 303
    assert r.headers["Location"].startswith("/report/thanks?id=")
    page = httpx.get(api.url + r.headers["Location"], timeout=10)
    assert page.status_code == 200 and "Thank you" in page.text
    bad = httpx.post(f"{api.url}/api/reports", data={"target": "not a host!"}, timeout=10)
    assert bad.status_code == 422 and "not sent" in bad.text and "<form" in bad.text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"kind": "report"}, 422, "target"),
        ({"target": 42}, 422, "target"),
        ({"target": "x" * 3000}, 422, "target"),
        ({"target": "localhost"}, 422, "target"),
        ({"target": "192.0.2.1"}, 422, "target"),
        ({"target": "ftp://files.example/x"}, 422, "target"),
        ({"target": "a..b.example"}, 422, "target"),
        ({"target": "ok.example", "kind": "complaint"}, 422, "kind"),
        ({"target": "ok.example", "category": "weather"}, 422, "category"),
        ({"target": "ok.example", "comment": "c" * 2001}, 422, "comment"),
        ({"target": "ok.example", "comment": "nul\x00byte"}, 422, "comment"),
        ({"target": "ok.example", "comment": ["list"]}, 422, "comment"),
    ],
)
def test_submission_validation(api: ApiThread, body: dict, status: int, field: str) -> None:
    r = submit(api, **body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]


def test_bad_bodies(api: ApiThread) -> None:
    url = f"{api.url}/api/reports"
    headers = {"Content-Type": "application/json"}
    r = httpx.post(url, content=b"{not json", headers=headers, timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = httpx.post(url, content=b"\xff\xfe", headers=headers, timeout=10)
    assert r.status_code == 400
    r = httpx.post(url, content=b"[1, 2]", headers=headers, timeout=10)
    assert r.status_code == 422
    r = httpx.post(url, content=b"[" * 60000, headers=headers, timeout=10)
    assert r.status_code == 400 and "deeply" in r.json()["error"]
    big = json.dumps({"target": "big.example", "comment": "x" * (MAX_BODY + 10)})
    r = httpx.post(url, content=big.encode(), headers=headers, timeout=10)
    assert r.status_code == 413 and "larger" in r.json()["error"]
    r = httpx.post(url, content=b"target=x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415
    token = api.create_token()
    r = httpx.post(
        f"{api.url}/api/reports/1/decision",
        content=b"nope",
        headers={**headers, **bearer(token)},
        timeout=10,
    )
    assert r.status_code == 400
    # Nothing of the above was stored.
    assert (
        httpx.get(f"{api.url}/api/reports", headers=bearer(token), timeout=10).json()["total"] == 0
    )


def test_authentication_and_roles(api: ApiThread) -> None:
    reviewer = api.create_token("reviewer")
    admin = api.create_token("admin")
    url = f"{api.url}/api/reports"
    assert httpx.get(url, timeout=10).status_code == 401
    r = httpx.get(url, headers=bearer("fdns_wrong"), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Basic abc"}, timeout=10).status_code == 401
    assert httpx.get(url, headers=bearer(reviewer), timeout=10).status_code == 200
    reload = f"{api.url}/api/reload"
    assert httpx.post(reload, headers=bearer(reviewer), timeout=10).status_code == 403
    r = httpx.post(reload, headers=bearer(admin), timeout=10)
    assert r.status_code == 200 and r.json() == {"reloaded": True}
    who = httpx.get(f"{api.url}/api/whoami", headers=bearer(admin), timeout=10).json()
    assert who["role"] == "admin" and who["name"] == "tester"
    assert api.server.store is not None
    api.server.store.revoke_token(who["id"])
    assert httpx.post(reload, headers=bearer(admin), timeout=10).status_code == 401


def test_review_decision_flow(api: ApiThread) -> None:
    token = api.create_token("reviewer", "alice")
    rid = submit(api, target="bad.example", category="adult", comment="nasty").json()["id"]
    submit(api, target="other.example")
    submit(api, target="bad.example")
    queue = httpx.get(f"{api.url}/api/reports?status=open", headers=bearer(token), timeout=10)
    rows = queue.json()["reports"]
    assert [r["target"] for r in rows] == ["bad.example", "other.example"]
    assert rows[0]["verdict"]["action"] == "none"
    url = f"{api.url}/api/reports/{rid}/decision"
    r = httpx.post(url, json={"action": "block", "reason": "adult"}, headers=bearer(token))
    assert r.status_code == 422 and r.json()["field"] == "category"
    r = httpx.post(
        url,
        json={"action": "block", "category": "adult", "reason": "adult content"},
        headers=bearer(token),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["override"]["host"] == "bad.example"
    again = httpx.post(
        url, json={"action": "reject", "reason": "x"}, headers=bearer(token), timeout=10
    )
    assert again.status_code == 409
    detail = httpx.get(f"{api.url}/api/reports/{rid}", headers=bearer(token), timeout=10).json()
    assert detail["status"] == "decided"
    assert detail["verdict"]["action"] == "block" and detail["verdict"]["list"] == "overrides"
    assert detail["decisions"][0]["reviewer"].startswith("alice")
    check = httpx.get(
        f"{api.url}/api/check", params={"name": "www.bad.example"}, headers=bearer(token)
    ).json()
    assert check["input"] == "www.bad.example" and check["action"] == "block"
    assert check["matched"] == "bad.example" and check["category"] == "adult"
    overrides = httpx.get(f"{api.url}/api/overrides", headers=bearer(token), timeout=10).json()
    assert [o["host"] for o in overrides["overrides"]] == ["bad.example"]
    assert "bad.example" in (api.server.data_dir / "overrides.toml").read_text()
    # The audit trail has the decision and the override change, with who and why.
    audit = httpx.get(f"{api.url}/api/audit", headers=bearer(token), timeout=10).json()
    kinds = [(r["kind"], r.get("reviewer", "")[:5], r.get("reason")) for r in audit["records"]]
    assert kinds == [
        ("review-decision", "alice", "adult content"),
        ("override-change", "alice", "adult content"),
    ]
    text = httpx.get(f"{api.url}/api/audit?format=csv", headers=bearer(token), timeout=10).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["kind"] == "review-decision" and rows[0]["subject"] == "bad.example"
    assert rows[1]["who"].startswith("alice") and rows[1]["action"] == "block"


def test_unknown_ids_and_bad_parameters(api: ApiThread) -> None:
    token = api.create_token()
    h = bearer(token)
    for path in (
        "/api/reports/999",
        "/api/reports/0",
        "/api/reports/abc",
        "/api/reports/" + "9" * 30,
    ):
        assert httpx.get(api.url + path, headers=h, timeout=10).status_code == 404, path
    r = httpx.post(
        f"{api.url}/api/reports/999/decision", json={"action": "reject", "reason": "x"}, headers=h
    )
    assert r.status_code == 404
    for query in ("status=maybe", "limit=0", "limit=abc", "offset=-1", "kind=x"):
        assert httpx.get(f"{api.url}/api/reports?{query}", headers=h).status_code == 400, query
    assert httpx.get(f"{api.url}/api/audit?since=yesterday", headers=h).status_code == 400
    assert httpx.get(f"{api.url}/api/audit?format=xml", headers=h).status_code == 400
    assert httpx.get(f"{api.url}/api/check", headers=h).status_code == 422
    assert httpx.get(f"{api.url}/api/check?name=a..b", headers=h).status_code == 422
    assert httpx.get(f"{api.url}/api/nothing", headers=h).status_code == 404


def test_rate_limit_per_client(make_api: Callable[..., ApiThread]) -> None:
    api = make_api(burst=5, rate_per_minute=1.0)
    codes = [submit(api, target="flood.example").status_code for _ in range(12)]
    assert codes[:5] == [201] * 5 and set(codes[5:]) == {429}
    r = submit(api, target="flood.example")
    assert int(r.headers["Retry-After"]) >= 1
    token = api.create_token()
    rows = httpx.get(f"{api.url}/api/reports", headers=bearer(token)).json()["reports"]
    assert rows[0]["count"] == 5  # every accepted report counted, no refused one


def test_reports_only_from_allowed_networks(make_api: Callable[..., ApiThread]) -> None:
    import ipaddress

    api = make_api(allow=(ipaddress.ip_network("10.0.0.0/8"),))
    r = submit(api, target="x.example")
    assert r.status_code == 403


def test_delete_override_needs_admin_and_a_reason(api: ApiThread) -> None:
    reviewer, admin = api.create_token("reviewer"), api.create_token("admin")
    rid = submit(api, target="temp.example").json()["id"]
    httpx.post(
        f"{api.url}/api/reports/{rid}/decision",
        json={"action": "allow", "reason": "fine"},
        headers=bearer(reviewer),
    )
    url = f"{api.url}/api/overrides/temp.example"
    assert httpx.delete(url, headers=bearer(reviewer)).status_code == 403
    assert httpx.delete(url, headers=bearer(admin)).status_code == 422
    r = httpx.delete(url, params={"reason": "expired"}, headers=bearer(admin))
    assert r.status_code == 200 and r.json()["removed"]["action"] == "allow"
    assert httpx.delete(url, params={"reason": "again"}, headers=bearer(admin)).status_code == 404
    records = httpx.get(f"{api.url}/api/audit?kind=override-change", headers=bearer(admin)).json()[
        "records"
    ]
    assert [r["action"] for r in records] == ["allow", "remove"]


def test_openapi_matches_routes(api: ApiThread) -> None:
    doc = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    assert doc == json.loads(json.dumps(openapi_document(api.url)))
    routed = set()
    for resource in api.server._runner.app.router.resources():  # noqa: SLF001
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            if route.method != "HEAD" and path.startswith("/api/"):
                routed.add((path, route.method.lower()))
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routed == described


def test_pages(api: ApiThread) -> None:
    # The review page is in the console: logging in first (tests/reports/test_console.py).
    review = httpx.get(f"{api.url}/review", timeout=10, follow_redirects=True)
    assert review.status_code == 200 and 'name="token"' in review.text
    assert "default-src 'none'" in review.headers["Content-Security-Policy"]
    form = httpx.get(
        f"{api.url}/report",
        params={"target": '"><script>alert(1)</script>', "kind": "appeal", "category": "adult"},
    )
    assert "<script>alert(1)" not in form.text and "&quot;&gt;&lt;script&gt;" in form.text
    assert 'value="appeal" selected' in form.text and 'value="adult" selected' in form.text


def test_concurrent_duplicate_flood_over_http(api: ApiThread) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: submit(api, target="same.example").status_code, range(60)))
    assert codes == [201] * 60
    token = api.create_token()
    rows = httpx.get(f"{api.url}/api/reports", headers=bearer(token)).json()["reports"]
    assert len(rows) == 1 and rows[0]["count"] == 60


def test_two_nodes_share_decisions_through_postgresql(
    make_api: Callable[..., ApiThread], postgres
) -> None:
    import time

    database = postgres.create_database()
    node_a, node_b = make_api(database), make_api(database)
    token = node_a.create_token()
    rid = submit(node_b, target="shared.example").json()["id"]  # reported on one node...
    r = httpx.post(
        f"{node_a.url}/api/reports/{rid}/decision",  # ...decided on the other
        json={"action": "block", "category": "adult", "reason": "shared"},
        headers=bearer(token),
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while node_b.service.overrides.check("shared.example") is None:
        assert time.monotonic() < deadline, "node B did not pick up node A's decision"
        time.sleep(0.1)
    assert 'host = "shared.example"' in (node_b.server.data_dir / "overrides.toml").read_text()


def test_trusted_proxy_forwarded_for(make_api: Callable[..., ApiThread]) -> None:
    import ipaddress

    api = make_api(
        burst=1,
        rate_per_minute=0.01,
        allow=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.51.100.0/24")),
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    url = f"{api.url}/api/reports"

    def post(xff: str | None) -> int:
        headers = {"X-Forwarded-For": xff} if xff else {}
        return httpx.post(url, json={"target": "p.example"}, headers=headers).status_code

    assert post(None) == 403  # the proxy itself is not an allowed reporter
    assert post("192.0.2.7") == 201
    assert post("192.0.2.8") == 429  # same /24: same bucket
    assert post("10.9.9.9, 198.51.100.1") == 201  # the right-most hop counts, not a spoof
    assert post("198.51.100.1, 10.9.9.9") == 403
    token = api.create_token()
    rows = httpx.get(f"{api.url}/api/reports", headers=bearer(token)).json()["reports"]
    assert rows[0]["count"] == 2 and rows[0]["reporter"] == "192.0.2.0"
