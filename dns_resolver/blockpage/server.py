"""The block page HTTP server.

In `ip` block mode a blocked name resolves to the block page's address, so the browser
asks this server for `http://blocked.example/anything`. Whatever the path or method, the
answer is one page, in the language the browser prefers, that says which site was blocked,
its category and list, which policy applied, why now (schedule, allowance) and how to ask
for a review.

HTTPS cannot be answered: the browser expects a certificate for the blocked name that it
trusts, and only a certificate authority installed on every device could issue one. So
the optional HTTPS listener accepts each connection and closes it cleanly (reads what the
client sent, then FIN, never a reset or a hang): the browser fails fast with a connection
error instead of waiting for a timeout.

The server runs in its own threads; it shares the resolver's `RecentBlocks` (the exact
verdict of a recent block) and falls back to re-checking the host with the matcher under
the HTTP client's policy.
"""

from __future__ import annotations

import contextlib
import html
import logging
import socket
import threading
import tomllib
from collections.abc import Callable
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode

from dns_resolver.blockpage.recent import BlockInfo, block_info
from fdconfig import Address, Config

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DEFAULT_LANGUAGE = "en"

Lookup = Callable[[str, str], BlockInfo | None]


def read_translations(folder: Path) -> dict[str, dict[str, Any]]:
    """Language code -> its words, from `folder/*.toml` (the block page's, the console's)."""
    out = {}
    for path in sorted(folder.glob("*.toml")):
        with path.open("rb") as f:
            out[path.stem] = tomllib.load(f)
    return out


@cache
def translations() -> dict[str, dict[str, Any]]:
    """Language code -> the block page's words."""
    return read_translations(HERE / "translations")


@cache
def template() -> Template:
    return Template((HERE / "templates" / "page.html").read_text(encoding="utf-8"))


def pick_language(accept_language: str | None, available: dict[str, Any] | None = None) -> str:
    """The best available language for an Accept-Language header (RFC 9110 12.5.4).

    Ranges are taken by quality (`q=`), in header order at equal quality; `fr-CA` matches
    `fr`. English when nothing matches.
    """
    available = translations() if available is None else available
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        primary = tag.split("-", 1)[0]
        if primary in available:
            return primary
    return DEFAULT_LANGUAGE


def render_page(info: BlockInfo | None, host: str, language: str, review_url: str) -> str:
    """The page for `host` (info None: not known to be blocked)."""
    words = translations()[language]
    fallback = translations()[DEFAULT_LANGUAGE]

    def word(key: str) -> str:
        return str(words.get(key, fallback[key]))

    esc = html.escape
    unknown = esc(word("unknown"))
    category = unknown
    reason_row = ""
    if info is not None and info.category:
        names = words.get("categories", {})
        label = names.get(info.category) or fallback["categories"].get(info.category)
        category = esc(f"{label} ({info.category})" if label else info.category)
        reason = _reason(info.note, word)
        if reason:
            reason_row = f"<dt>{esc(word('label_reason'))}</dt><dd>{esc(reason)}</dd>"
    intro_key = "intro" if info is not None else "intro_unknown"
    if review_url:
        query = urlencode(
            {
                "host": host,
                "category": info.category if info else "",
                "list": info.list if info else "",
                "policy": info.policy if info else "",
            }
        )
        separator = "&" if "?" in review_url else "?"
        link = esc(f"{review_url}{separator}{query}")
        review = f'<a href="{link}">{esc(word("review_link"))}</a>'
    else:
        review = esc(word("review_none"))
    return template().substitute(
        lang=esc(language),
        title=esc(word("title")),
        heading=esc(word("heading")),
        intro=esc(word(intro_key)).replace("{host}", f"<strong>{esc(host)}</strong>"),
        label_site=esc(word("label_site")),
        label_category=esc(word("label_category")),
        label_list=esc(word("label_list")),
        label_policy=esc(word("label_policy")),
        host=esc(host),
        category=category,
        list=esc(info.list) if info and info.list else unknown,
        policy=esc(info.policy) if info and info.policy else unknown,
        reason_row=reason_row,
        review_heading=esc(word("review_heading")),
        review=review,
        https_note=esc(word("https_note")),
    )


def _reason(note: str, word: Callable[[str], str]) -> str:
    """Plain words for the schedule / allowance part of a block's note."""
    for part in note.split():
        key, _, detail = part.partition("=")
        if key == "schedule":
            return word("schedule").replace("{detail}", detail)
        if key == "allowance":
            return word("allowance")
    return ""


def host_of(header: str | None) -> str:
    """The host name of a Host header: lower case, port and brackets removed."""
    host = (header or "").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "filterdns-blockpage"

    def _answer(self, body: bool = True) -> None:
        host = host_of(self.headers.get("Host"))
        try:
            info = self.server.lookup(host, self.client_address[0]) if host else None
        except Exception:
            log.exception("block page: lookup of %s failed", host)
            info = None
        language = pick_language(self.headers.get("Accept-Language"))
        page = render_page(info, host or "?", language, self.server.review_url).encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Language", language)
        self.send_header("Content-Length", str(len(page)))
        # The page stands in for someone else's site: never let it be cached as theirs.
        self.send_header("Cache-Control", "no-store")
        self.send_header("Vary", "Accept-Language")
        self.end_headers()
        if body:
            self.wfile.write(page)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 65536:
            self.rfile.read(length)
        self._answer()

    do_PUT = do_POST  # noqa: N815
    do_DELETE = do_GET  # noqa: N815
    do_OPTIONS = do_GET  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("block page: %s", format % args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    lookup: Lookup
    review_url: str


class BlockPageServer:
    """The block page on `listen` (HTTP) and, optionally, `https_listen` (closed cleanly).

    Args:
        listen: where to serve HTTP (port 0 picks one; `.address` tells which).
        lookup: (host, client address) -> why the host is blocked for that client.
        review_url: where "ask for a review" points ("" = tell them whom to ask).
        https_listen: where to accept and close TLS connections, or None.
        reuse_port: bind with SO_REUSEPORT, so that every worker process of a multi-worker
            server serves the page on the same port (each falls back to re-checking hosts
            it did not block itself).
    """

    def __init__(
        self,
        listen: Address,
        lookup: Lookup,
        *,
        review_url: str = "",
        https_listen: Address | None = None,
        reuse_port: bool = False,
    ) -> None:
        family = socket.AF_INET6 if listen.is_ipv6 else socket.AF_INET
        server_class = type(
            "_BlockPageHTTPServer",
            (_HTTPServer,),
            {"address_family": family, "allow_reuse_port": reuse_port},
        )
        self.httpd = server_class((listen.host, listen.port), _Handler)
        self.httpd.lookup = lookup
        self.httpd.review_url = review_url
        self.address = Address(listen.host, self.httpd.server_address[1])
        self._https: socket.socket | None = None
        if https_listen is not None:
            family = socket.AF_INET6 if https_listen.is_ipv6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((https_listen.host, https_listen.port))
            sock.listen(64)
            self._https = sock
            self.https_address: Address | None = Address(https_listen.host, sock.getsockname()[1])
        else:
            self.https_address = None
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_config(
        cls, config: Config, resolver: Any, *, reuse_port: bool = False
    ) -> BlockPageServer:
        bp = config.blockpage
        return cls(
            bp.listen,
            resolver_lookup(resolver),
            review_url=bp.review_url,
            https_listen=bp.https_listen,
            reuse_port=reuse_port,
        )

    def start(self) -> None:
        thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="blockpage", daemon=True
        )
        thread.start()
        self._threads.append(thread)
        if self._https is not None:
            thread = threading.Thread(target=self._close_tls, name="blockpage-tls", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _close_tls(self) -> None:
        sock = self._https
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=_close_cleanly, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._https is not None:
            # close() alone does not wake a thread blocked in accept(); shutdown() does.
            with contextlib.suppress(OSError):
                self._https.shutdown(socket.SHUT_RDWR)
            self._https.close()
        for thread in self._threads:
            thread.join(timeout=2)


def _close_cleanly(conn: socket.socket) -> None:
    """Read the client's hello, then close with a FIN (closing with unread data would send
    a reset, which some clients report as an attack rather than a refusal)."""
    with conn:
        conn.settimeout(1.0)
        try:
            conn.recv(16384)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(16384):
                pass
        except OSError:
            pass


def resolver_lookup(resolver: Any) -> Lookup:
    """Why `host` is blocked: the resolver's recent block, else a re-check under the HTTP
    client's policy (by its source address), else the plain matcher."""

    def lookup(host: str, client: str) -> BlockInfo | None:
        recent = resolver.recent_blocks
        if recent is not None:
            info = recent.get(host)
            if info is not None:
                return info
        table = resolver.policies
        if table is not None:
            selection = table.select(client)
            decision = table.decide(selection, host, resolver.matcher, count=False)
            if decision.action in ("block", "canary"):
                return block_info(host, decision.verdict, selection.policy.name, decision.note)
            return None
        verdict = resolver.matcher.check(host)
        return block_info(host, verdict, "", "") if verdict.blocked else None

    return lookup


__all__ = ["BlockPageServer", "host_of", "pick_language", "render_page", "resolver_lookup"]
