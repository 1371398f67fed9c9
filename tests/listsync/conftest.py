"""A real HTTP server on loopback that serves lists the way mirrors do (and fail)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fdconfig import Config, load_config
from tests.dns_resolver.conftest import (  # noqa: F401 - fixtures are found by name
    nsd_upstream,
    start_filterdns,
)


@dataclass
class Served:
    data: bytes
    mtime: float
    etag: str | None


@dataclass
class Request:
    path: str
    status: int
    if_none_match: str | None
    if_modified_since: str | None


@dataclass
class ListServer:
    """An http.server on 127.0.0.1 that speaks ETag/If-None-Match and Last-Modified/
    If-Modified-Since (RFC 9110: If-None-Match wins when both are sent).

    `mode` switches failures on: "ok", "truncate" (announce the full Content-Length, send
    half, close), "error" (500 for everything). `stop()` closes the port.
    """

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    mode: str = "ok"
    etags: bool = True
    clock: float = 1_700_000_000.0
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    port: int = 0

    def put(self, path: str, data: bytes) -> None:
        """Serve `data` at `path`; a new version gets a later Last-Modified and new ETag."""
        self.clock += 60
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"' if self.etags else None
        self.files[path] = Served(data, self.clock, etag)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def statuses(self, path: str) -> list[int]:
        return [r.status for r in self.requests if r.path == path]

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a stuck client cannot hold a server thread for long

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                status = self._answer()
                owner.requests.append(
                    Request(
                        self.path,
                        status,
                        self.headers.get("If-None-Match"),
                        self.headers.get("If-Modified-Since"),
                    )
                )

            def _answer(self) -> int:
                if owner.mode == "error":
                    return self._send(500, b"internal error\n")
                served = owner.files.get(self.path)
                if served is None:
                    return self._send(404, b"not found\n")
                inm = self.headers.get("If-None-Match")
                ims = self.headers.get("If-Modified-Since")
                if inm is not None:
                    if served.etag is not None and served.etag in [
                        t.strip() for t in inm.split(",")
                    ]:
                        return self._send(304, b"", served)
                elif ims is not None:
                    try:
                        since = parsedate_to_datetime(ims).timestamp()
                    except (TypeError, ValueError):
                        since = None
                    if since is not None and served.mtime <= since:
                        return self._send(304, b"", served)
                if owner.mode == "truncate":
                    self.send_response(200)
                    self._validators(served)
                    self.send_header("Content-Length", str(len(served.data)))
                    self.end_headers()
                    self.wfile.write(served.data[: len(served.data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return 200
                return self._send(200, served.data, served)

            def _validators(self, served: Served) -> None:
                self.send_header("Last-Modified", formatdate(served.mtime, usegmt=True))
                if served.etag is not None:
                    self.send_header("ETag", served.etag)

            def _send(self, status: int, body: bytes, served: Served | None = None) -> int:
                self.send_response(status)
                if served is not None:
                    self._validators(served)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return status

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None


@pytest.fixture
def list_server() -> Iterator[ListServer]:
    server = ListServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def names(count: int, prefix: str = "site") -> list[str]:
    return [f"{prefix}{i}.example" for i in range(count)]


def domain_list(entries: list[str]) -> bytes:
    return ("# a list\n" + "\n".join(entries) + "\n").encode()


def write_config(tmp_path: Path, lists_toml: str, extra: str = "") -> Path:
    """A config in tmp_path with data_dir "state" and the given [[lists]] tables."""
    path = tmp_path / "filterdns.toml"
    path.write_text(f'[server]\ndata_dir = "state"\n{extra}\n{lists_toml}')
    return path


def url_list(url: str, name: str, **keys: object) -> str:
    text = f'[[lists]]\nname = "{name}"\nurl = "{url}"\ncategory = "adult"\n'
    for key, value in keys.items():
        text += f"{key} = {value!r}\n".replace("'", '"')
    return text


def load(path: Path) -> Config:
    return load_config(path, resolv_conf="/nonexistent")
