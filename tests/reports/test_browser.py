"""Headless Chromium: the appeal form submitted, then the review page shows the appeal and
a reviewer allows it there; screenshots are kept under artifacts/reports/."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.dns_resolver.harness import (
    REPO_ROOT,
    NsdServer,
    ServerProcess,
    TestZone,
    free_port,
    write_list,
)
from tests.reports.browser import Browser
from tests.reports.test_console_browser import log_in
from tests.reports.test_e2e import admin_config, admin_url, reviewer_token, wait_for_dig

ARTIFACTS = Path(os.environ.get("FILTERDNS_ARTIFACTS", REPO_ROOT / "artifacts")) / "reports"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    yield b
    b.close()


def test_appeal_form_then_review_page(
    filterdns_on_nsd: Callable[..., ServerProcess], browser: Browser
) -> None:
    server = filterdns_on_nsd(admin_config())
    base = admin_url(server)
    listed = TestZone.BLOCKED.rstrip(".")
    assert server.dig(listed).status == "NXDOMAIN"

    # The appeal form as the block page links to it, pre-filled with host, category, list.
    browser.open(f"{base}/report?target={listed}&kind=appeal&category=adult&list=test")
    assert browser.evaluate("document.getElementById('target').value") == listed
    assert browser.evaluate("document.getElementById('kind').value") == "appeal"
    browser.evaluate("document.getElementById('comment').value = 'This is a health charity.'")
    browser.screenshot(ARTIFACTS / "appeal-form.png")
    browser.evaluate("document.getElementById('send').click()")
    browser.wait_for("location.pathname === '/report/thanks'")
    assert "Thank you" in browser.evaluate("document.body.innerText")
    browser.screenshot(ARTIFACTS / "appeal-thanks.png")

    # The review page, in the console once logged in with a reviewer token, lists the
    # appeal with its current verdict.
    log_in(browser, base, reviewer_token(server, "reviewer", "carol"), "/review")
    row = browser.wait_for(
        "Array.from(document.querySelectorAll('#queue tbody tr'))"
        f".map(tr => tr.innerText).find(t => t.includes('{listed}'))"
    )
    assert "appeal" in row and "block (adult) by list test" in row
    browser.screenshot(ARTIFACTS / "review-queue.png")

    # Open it and allow it from the page.
    browser.evaluate("document.querySelector('#queue tbody tr').click()")
    browser.wait_for("!document.getElementById('details').hidden")
    assert browser.evaluate("document.getElementById('d-comment').innerText") == (
        "This is a health charity."
    )
    browser.evaluate("document.getElementById('d-reason').value = 'sexual-health charity'")
    browser.screenshot(ARTIFACTS / "review-details.png")
    browser.evaluate("document.querySelector('button[data-action=allow]').click()")
    browser.wait_for("document.getElementById('status').innerText.includes('allow recorded')")
    browser.screenshot(ARTIFACTS / "review-decided.png")
    allowed, _ = wait_for_dig(server, listed, lambda d: d.status == "NOERROR")
    assert allowed.rdata("A") == [TestZone.BLOCKED_A]


def test_block_page_review_link_to_decision(
    tmp_path: Path,
    start_filterdns: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
) -> None:
    """The block page's own "ask for a review" link leads to the pre-filled appeal form."""
    listed = TestZone.BLOCKED.rstrip(".")
    page_port, admin_port = free_port(), free_port()
    config = {
        "upstream": {"servers": [nsd_upstream.upstream]},
        "server": {"data_dir": "data"},
        "blocking": {"mode": "ip", "ipv4": "127.0.0.1"},
        "admin": {"enabled": True, "listen": f"127.0.0.1:{admin_port}"},
        "blockpage": {
            "enabled": True,
            "listen": f"127.0.0.1:{page_port}",
            "review_url": f"http://127.0.0.1:{admin_port}/report",
        },
        "lists": [
            {
                "path": str(write_list(tmp_path, [listed], "adult.txt")),
                "name": "test",
                "category": "adult",
            }
        ],
        "policies": {
            "child": {"clients": ["127.0.0.2/32"], "block": ["adult"]},
            "default": {"block": ["malware-phishing"]},
        },
    }
    server = start_filterdns(config)
    assert server.dig(listed, "A", "-b", "127.0.0.2").rdata("A") == ["127.0.0.1"]
    browser = Browser(tmp_path, (f"--host-resolver-rules=MAP {listed} 127.0.0.1:{page_port}",))
    try:
        browser.open(f"http://{listed}/some/page")
        assert "blocked" in browser.evaluate("document.body.innerText")
        browser.screenshot(ARTIFACTS / "blockpage.png")
        href = browser.evaluate(
            f"Array.from(document.links).map(a => a.href)"
            f".find(h => h.startsWith('http://127.0.0.1:{admin_port}/report'))"
        )
        assert href, "the block page has no review link to the report form"
        browser.evaluate(f"location.href = {href!r}")
        browser.wait_for("location.pathname === '/report' && document.readyState === 'complete'")
        assert browser.evaluate("document.getElementById('target').value") == listed
        assert browser.evaluate("document.getElementById('kind').value") == "appeal"
        assert browser.evaluate("document.getElementById('category').value") == "adult"
        browser.screenshot(ARTIFACTS / "blockpage-appeal-form.png")
        browser.evaluate("document.getElementById('send').click()")
        browser.wait_for("location.pathname === '/report/thanks'")
    finally:
        browser.close()
    token = reviewer_token(server)
    base = f"http://127.0.0.1:{admin_port}"
    auth = {"Authorization": f"Bearer {token}"}
    queue = httpx.get(f"{base}/api/reports", headers=auth, timeout=10).json()["reports"]
    assert [(r["target"], r["kind"], r["list"], r["policy"]) for r in queue] == [
        (listed, "appeal", "test", "child")
    ]
    r = httpx.post(
        f"{base}/api/reports/{queue[0]['id']}/decision",
        json={"action": "allow", "reason": "mis-block"},
        headers=auth,
        timeout=10,
    )
    assert r.status_code == 200
    allowed, _ = wait_for_dig(
        server, listed, lambda d: d.status == "NOERROR" and d.rdata("A") == [TestZone.BLOCKED_A]
    )
    assert allowed.rdata("A") == [TestZone.BLOCKED_A]
    child = server.dig(listed, "A", "-b", "127.0.0.2")
    assert child.rdata("A") == [TestZone.BLOCKED_A]  # the allow override beats the policy
