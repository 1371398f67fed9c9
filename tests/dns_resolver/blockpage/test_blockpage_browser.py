"""The block page in a real browser: headless Chromium opens a name filterdns blocked (in
`ip` mode it resolves to the block page; Chromium is told so with --host-resolver-rules)
and the rendered text says what was blocked, why, and under which policy. Screenshots are
kept under artifacts/ (gitignored) for people to look at."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dns_resolver.harness import NsdServer, ServerProcess, TestZone, free_port, write_list
from tests.reports import browser

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "artifacts"
# The flags of the report tests' browser, minus DevTools (these runs print and exit).
FLAGS = tuple(f for f in browser.FLAGS if not f.startswith("--remote-debugging"))
BLOCKED = TestZone.BLOCKED.rstrip(".")


def chromium(tmp_path: Path, url: str, port: int, *extra: str) -> str:
    """Run headless Chromium on `url` with BLOCKED mapped to the block page; its stdout."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run(
        [
            browser.chromium_binary(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--host-resolver-rules=MAP {BLOCKED} 127.0.0.1:{port}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


@pytest.fixture
def blocking_server(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> tuple[ServerProcess, int]:
    page_port = free_port()
    config = {
        "upstream": {"servers": [nsd_upstream.upstream]},
        "blocking": {"mode": "ip", "ipv4": "127.0.0.1"},
        "blockpage": {
            "enabled": True,
            "listen": f"127.0.0.1:{page_port}",
            "review_url": "https://review.example/report",
        },
        "lists": [
            {
                "path": str(write_list(tmp_path, [BLOCKED], "adult.txt")),
                "name": "ut1/adult",
                "category": "adult",
            }
        ],
        "policies": {
            "child": {"clients": ["127.0.0.2/32"], "block": ["adult"]},
            "default": {"block": ["malware-phishing"]},
        },
    }
    return start_filterdns(config), page_port


def test_chromium_shows_the_block_page(
    tmp_path: Path, blocking_server: tuple[ServerProcess, int]
) -> None:
    server, page_port = blocking_server
    answer = server.dig(BLOCKED, "A", "-b", "127.0.0.2")
    assert answer.rdata("A") == ["127.0.0.1"]  # ip mode: the name leads to the block page
    assert answer.ede[0][1].endswith("policy=child")

    dom = chromium(tmp_path, f"http://{BLOCKED}/some/page", page_port, "--dump-dom")
    assert "This site is blocked" in dom
    assert f"<strong>{BLOCKED}</strong>" in dom
    assert "Adult content (adult)" in dom
    assert "ut1/adult" in dom
    assert "<dd>child</dd>" in dom
    assert "Ask for this block to be reviewed" in dom

    french = chromium(
        tmp_path, f"http://{BLOCKED}/", page_port, "--accept-lang=fr-FR,fr", "--dump-dom"
    )
    assert "Ce site est bloqué" in french and "Contenu pour adultes (adult)" in french

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "blockpage-en.png"
    shot.unlink(missing_ok=True)
    chromium(
        tmp_path, f"http://{BLOCKED}/", page_port, f"--screenshot={shot}", "--window-size=1024,768"
    )
    assert shot.exists() and shot.stat().st_size > 5000
