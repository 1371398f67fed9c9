"""The console in headless Chromium: log in, the overview counts the queries just sent,
a search finds a block with its rule, pausing the child's policy from the page lets `dig`
through within 1 s and ends by itself, and axe-core finds no serious accessibility
violation on any page, at desktop and phone widths. Screenshots: artifacts/console/.

axe-core comes from npm (`.ci/run` installs it into .ci/node/); it is injected into the
page over DevTools, so nothing is fetched from outside."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dns_resolver.harness import REPO_ROOT, ServerProcess, eventually
from tests.reports.browser import Browser
from tests.reports.test_console_e2e import BLOCKED, CHILD, WWW, console_config
from tests.reports.test_e2e import admin_url, reviewer_token

ARTIFACTS = Path(os.environ.get("FILTERDNS_ARTIFACTS", REPO_ROOT / "artifacts")) / "console"
AXE = REPO_ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
PAGES = ("/", "/queries", "/clients", "/policies", "/lists", "/review", "/check?name=x.example")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    yield b
    b.close()


def log_in(browser: Browser, base: str, token: str, then: str = "/") -> None:
    browser.open(f"{base}/login?next={then}")
    browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)}")
    browser.evaluate("document.querySelector('main form button').click()")
    arrived = f"location.pathname === {json.dumps(then)} && document.readyState === 'complete'"
    browser.wait_for(arrived)


def serious_violations(browser: Browser) -> list[dict]:
    """axe-core's violations of impact serious or critical on the current page."""
    assert AXE.is_file(), f"{AXE} missing: run .ci/run (npm install axe-core)"
    if not browser.evaluate("typeof axe !== 'undefined'"):
        browser.evaluate(AXE.read_text(encoding="utf-8") + "; true")
    found = browser.evaluate(
        "axe.run(document).then(r => r.violations.map(v => "
        "({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))})))"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def test_console_in_chromium(
    filterdns_on_nsd: Callable[..., ServerProcess], browser: Browser, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(console_config(tmp_path))
    base = admin_url(server)
    for _ in range(3):
        assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"
    for _ in range(2):
        assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"

    log_in(browser, base, reviewer_token(server, "admin", "teacher"))
    browser.screenshot(ARTIFACTS / "overview-first.png")

    def overview_shows_five() -> bool:
        browser.open(f"{base}/")
        return browser.evaluate("document.getElementById('queries-total').innerText") == "5"

    assert eventually(overview_shows_five, timeout=5)
    assert "Signed in as teacher (admin)" in browser.evaluate("document.body.innerText")
    browser.screenshot(ARTIFACTS / "overview.png")

    # The query log: the block, with the rule that decided it.
    browser.open(f"{base}/queries?name=blocked.filterdns&result=blocked")
    text = browser.evaluate("document.getElementById('querylog').innerText")
    assert BLOCKED in text and "adult" in text and "test" in text
    assert browser.evaluate("document.querySelectorAll('#querylog code').length") >= 2
    browser.screenshot(ARTIFACTS / "queries.png")

    # Pause the child's policy from its page for 0.05 minutes (3 s).
    browser.open(f"{base}/policies")
    browser.evaluate("document.getElementById('m-child').value = '0.05'")
    browser.screenshot(ARTIFACTS / "policies.png")
    browser.evaluate(
        "document.querySelector('form[action=\"/api/policies/child/pause\"] button').click()"
    )
    clicked = time.monotonic()
    assert eventually(lambda: server.dig(BLOCKED, "A", "-b", CHILD).status == "NOERROR", 1.0)
    assert time.monotonic() - clicked <= 1.5  # the page load plus at most 1 s
    browser.wait_for("location.pathname === '/policies' && document.readyState === 'complete'")
    assert "paused until" in browser.evaluate("document.body.innerText")
    browser.screenshot(ARTIFACTS / "policies-paused.png")
    assert eventually(lambda: server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN", 6.0)

    # Accessibility, each page at desktop then phone width; French too.
    problems = {}
    for width, height, mobile in ((1280, 900, False), (375, 800, True)):
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=mobile,
        )  # fmt: skip
        for path in (*PAGES, "/?lang=fr"):
            browser.open(base + path)
            found = serious_violations(browser)
            if found:
                problems[f"{path} @{width}"] = found
        browser.open(f"{base}/queries")
        browser.screenshot(ARTIFACTS / f"queries-{width}.png")
        # Nothing wider than the phone's screen but the scrolled tables.
        assert browser.evaluate("document.documentElement.scrollWidth") <= max(width, 400)
    assert not problems, json.dumps(problems, indent=1)


def test_keyboard_reaches_the_navigation(
    filterdns_on_nsd: Callable[..., ServerProcess], browser: Browser, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(console_config(tmp_path))
    base = admin_url(server)
    log_in(browser, base, reviewer_token(server, "viewer", "parent"), "/clients")
    # The first Tab stop is the skip link, the next ones the navigation.
    for key in ("Tab", "Tab"):
        browser.call("Input.dispatchKeyEvent", type="keyDown", key=key, code=key,
                     windowsVirtualKeyCode=9)  # fmt: skip
        browser.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=key,
                     windowsVirtualKeyCode=9)  # fmt: skip
    assert browser.evaluate("document.activeElement.getAttribute('href')") == "/"
    # A viewer sees no pause form.
    browser.open(f"{base}/policies")
    assert browser.evaluate("document.querySelectorAll('form[action*=pause]').length") == 0
