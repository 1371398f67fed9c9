"""The block page server: the page's words and languages, any request answered, escaping,
the review link, and HTTPS connections closed cleanly."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

from dns_resolver.blockpage.recent import BlockInfo, RecentBlocks
from dns_resolver.blockpage.server import BlockPageServer, host_of, pick_language, render_page
from fdconfig import Address
from filtercore.verdict import Action, Verdict

INFO = BlockInfo("porn.example", "adult", "ut1/adult", "porn.example", "child", "policy=child")


def lookup(host: str, client: str) -> BlockInfo | None:
    if host == "porn.example":
        return INFO
    if host == "late.example":
        return BlockInfo(
            host, "games", "games", "late.example", "child", "policy=child schedule=bedtime"
        )
    if host.startswith("<"):
        return BlockInfo(host, "<b>x</b>", "<i>", "", "<p>", "")
    return None


@pytest.fixture
def server() -> Iterator[BlockPageServer]:
    srv = BlockPageServer(
        Address("127.0.0.1", 0),
        lookup,
        review_url="https://review.example/ask?src=dns",
        https_listen=Address("127.0.0.1", 0),
    )
    srv.start()
    yield srv
    srv.stop()


def fetch(
    server: BlockPageServer, host: str, path: str = "/", method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.address.port, timeout=5)
    try:
        conn.request(method, path, headers={"Host": host, **headers})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def test_accept_language() -> None:
    available = {"en": {}, "fr": {}}
    assert pick_language("fr-CA,fr;q=0.9,en;q=0.8", available) == "fr"
    assert pick_language("de, en;q=0.5, fr;q=0.7", available) == "fr"
    assert pick_language("de", available) == "en"
    assert pick_language("fr;q=0, en", available) == "en"
    assert pick_language(None, available) == "en"
    assert pick_language("fr;q=abc", available) == "en"


def test_host_of() -> None:
    assert host_of("Porn.Example:8080") == "porn.example"
    assert host_of("[::1]:80") == "::1"
    assert host_of("porn.example.") == "porn.example"
    assert host_of(None) == ""


def test_page_says_site_category_list_policy_and_review(server: BlockPageServer) -> None:
    status, headers, page = fetch(server, "porn.example:80", "/some/path?q=1")
    assert status == 403
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "This site is blocked" in page
    assert "<strong>porn.example</strong>" in page
    assert "Adult content (adult)" in page
    assert "ut1/adult" in page and "child" in page
    assert (
        'href="https://review.example/ask?src=dns&amp;host=porn.example&amp;category=adult'
        '&amp;list=ut1%2Fadult&amp;policy=child"' in page
    )
    assert "<script" not in page and "http://" not in page.replace("https://review", "")


def test_french_and_reasons(server: BlockPageServer) -> None:
    _, headers, page = fetch(server, "late.example", **{"Accept-Language": "fr-FR,fr;q=0.9"})
    assert headers["Content-Language"] == "fr"
    assert '<html lang="fr">' in page
    assert "Ce site est bloqué" in page and "Jeux en ligne (games)" in page
    assert "bloqué à cette heure-ci (bedtime)" in page


def test_any_method_and_unknown_hosts(server: BlockPageServer) -> None:
    status, headers, body = fetch(server, "porn.example", method="HEAD")
    assert status == 403 and body == "" and int(headers["Content-Length"]) > 500
    status, _, page = fetch(server, "porn.example", method="POST")
    assert status == 403 and "porn.example" in page
    _, _, page = fetch(server, "unknown.example")
    assert "no longer knows why" in page


def test_everything_is_escaped(server: BlockPageServer) -> None:
    _, _, page = fetch(server, "<script>.example")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>x</b>" not in page and "<i>" not in page


def test_render_without_review_url() -> None:
    page = render_page(INFO, "porn.example", "en", "")
    assert "Ask the person who looks after this network" in page
    assert "href=" not in page


def test_https_connections_are_closed_cleanly(server: BlockPageServer) -> None:
    assert server.https_address is not None
    with socket.create_connection(("127.0.0.1", server.https_address.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")  # the start of a TLS ClientHello
        assert s.recv(100) == b""  # FIN, no data, no reset


def test_recent_blocks_are_bounded() -> None:
    recent = RecentBlocks(size=2)
    verdict = Verdict(Action.BLOCK, category="adult", list="l", rule="r")
    for host in ("a.example", "b.example", "c.example"):
        recent.add(host, verdict, "child", "policy=child")
    assert len(recent) == 2 and recent.get("a.example") is None
    assert recent.get("c.example") == BlockInfo(
        "c.example", "adult", "l", "r", "child", "policy=child"
    )
