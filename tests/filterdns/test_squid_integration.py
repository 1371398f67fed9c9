"""`filterdns squid-helper` behind a real Squid (Debian's `squid`) on 127.0.0.1.

Squid runs in the foreground (-N) with a generated squid.conf: no disk cache, its own pid,
log and shared-memory names (-n), host names from its own hosts file (so no DNS), and the
helper as `url_rewrite_program` with channel-IDs (concurrency). `curl -x` asks through it
for a URL in a `urls` list (redirected to the block page), an allowed URL (fetched from a
local origin server) and a URL matching a keyword rule covered by an exception (allowed).
The same helper as `external_acl_type` (--mode acl) makes Squid deny the listed URL.

Squid refuses to run as root, and started as root it switches to `proxy`, which cannot
read a Python installed under /root (pyenv). As root the test therefore starts Squid as
`proxy` with CAP_DAC_READ_SEARCH as an ambient capability, which the helper inherits, so
it can read the interpreter and the checkout; as any other user Squid runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.dns_resolver.harness import free_port
from tests.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
SQUID = shutil.which("squid") or "/usr/sbin/squid"
ORIGIN_HOST = "origin.filterdns.test"
BLOCK_HOST = "block.filterdns.test"


class _Handler(BaseHTTPRequestHandler):
    """Answers every GET with `<server name> <path>` so a test sees who answered."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = f"{self.server.label} {self.path}".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_server() -> Iterator[Callable[[str], int]]:
    """Factory: start a labelled HTTP server on 127.0.0.1; all are stopped at teardown."""
    servers: list[ThreadingHTTPServer] = []

    def start(label: str) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.label = label  # type: ignore[attr-defined]
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class Squid:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    service: str

    def fetch(self, url: str) -> tuple[int, str, str]:
        """(status, Location, body) of `curl -x` through this Squid, not following redirects."""
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-x", f"http://127.0.0.1:{self.port}",
             "-o", "-", "-w", "\n%{http_code} %{redirect_url}", url],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        body, _, tail = out.stdout.rpartition("\n")
        status, _, location = tail.partition(" ")
        assert status.isdigit(), (out.stdout, out.stderr, self.cache_log())
        return int(status), location, body

    def cache_log(self) -> str:
        path = self.workdir / "cache.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc)
        # Shared-memory segments of this instance only (named after -n), left by a kill.
        for path in glob.glob(f"/dev/shm/squid-{self.service}-*"):
            os.unlink(path)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "squid exited during start-up"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"squid did not listen on 127.0.0.1:{port} within {timeout} s")


def _squid_conf(workdir: Path, port: int, helper: Path, mode: str) -> str:
    common = f"""
http_port 127.0.0.1:{port}
visible_hostname filterdns-test
pid_filename {workdir}/squid.pid
cache_log {workdir}/cache.log
logformat filterdns %ru %>Hs tag=%et
access_log stdio:{workdir}/access.log filterdns
cache_store_log none
coredump_dir {workdir}
netdb_filename none
cache deny all
cache_mem 8 MB
hosts_file {workdir}/hosts
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
"""
    if mode == "rewrite":
        return common + f"""
http_access allow localhost
http_access deny all
url_rewrite_program {helper}
url_rewrite_children 2 startup=1 idle=1 concurrency=16
"""
    # No result caching (ttl=0), so every request reaches the helper.
    options = "children-max=2 children-startup=1 concurrency=16 ttl=0 negative_ttl=0"
    return common + f"""
external_acl_type filterdns {options} %>ru %>a {helper}
acl filtered external filterdns
http_access deny filtered
http_access allow localhost
http_access deny all
"""


StartSquid = Callable[[str], tuple[Squid, int, int]]


@pytest.fixture
def start_squid(http_server: Callable[[str], int]) -> Iterator[StartSquid]:
    """Factory: start Squid with the helper in `mode` (rewrite or acl); returns (squid,
    origin port, block page port). Every Squid is stopped and its folder removed."""
    started: list[Squid] = []

    def start(mode: str) -> tuple[Squid, int, int]:
        origin_port = http_server("origin")
        block_port = http_server("blockpage")
        # A folder of our own under /tmp (pytest's tmp_path is private to its user),
        # readable by the user Squid runs as.
        workdir = Path(tempfile.mkdtemp(prefix="filterdns-squid-"))
        (workdir / "hosts").write_text(f"127.0.0.1 {ORIGIN_HOST} {BLOCK_HOST}\n")
        (workdir / "urls.txt").write_text(f"{ORIGIN_HOST}/listed/page\n")
        (workdir / "keywords.txt").write_text("sex\n@@sussex\n")
        helper = workdir / "helper.sh"
        helper.write_text(
            "#!/bin/sh\n"
            f"cd {workdir} || exit 1\n"
            f"PYTHONPATH={ROOT} exec {sys.executable} -m filterdns squid-helper "
            f"--mode {mode} --list urls.txt:adult:urls --list keywords.txt:adult:keywords "
            f"--block-url http://{BLOCK_HOST}:{block_port}/blocked\n"
        )
        helper.chmod(0o755)
        port = free_port()
        (workdir / "squid.conf").write_text(_squid_conf(workdir, port, helper, mode))
        service = f"fdt{os.getpid()}x{port}"
        argv = [SQUID, "-N", "-n", service, "-f", str(workdir / "squid.conf")]
        if os.geteuid() == 0:
            proxy = pwd.getpwnam("proxy")
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, proxy.pw_uid, proxy.pw_gid)
            workdir.chmod(0o755)
            argv = ["setpriv", "--reuid=proxy", "--regid=proxy", "--init-groups",
                    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
                    *argv]  # fmt: skip
        with (workdir / "squid.stderr").open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        instance = Squid(proc, port, workdir, service)
        started.append(instance)
        _wait_for_port(port, proc, timeout=30)
        return instance, origin_port, block_port

    yield start
    for instance in started:
        instance.stop()
        shutil.rmtree(instance.workdir, ignore_errors=True)


@pytest.fixture
def squid(start_squid: StartSquid) -> tuple[Squid, int, int]:
    """Squid with the helper as url_rewrite_program."""
    return start_squid("rewrite")


def test_squid_redirects_listed_url_to_block_page(squid: tuple[Squid, int, int]) -> None:
    proxy, origin_port, block_port = squid
    status, location, _ = proxy.fetch(f"http://{ORIGIN_HOST}:{origin_port}/listed/page/x.html")
    assert status == 302, proxy.cache_log()
    url = urlsplit(location)
    assert (url.hostname, url.port, url.path) == (BLOCK_HOST, block_port, "/blocked")
    assert parse_qs(url.query) == {
        "host": [ORIGIN_HOST], "category": ["adult"], "list": ["urls"]
    }  # fmt: skip
    # The block page itself is reachable through the proxy (and not blocked).
    status, _, body = proxy.fetch(location)
    assert status == 200 and body.startswith("blockpage /blocked?host=")


def test_squid_fetches_allowed_url_from_origin(squid: tuple[Squid, int, int]) -> None:
    proxy, origin_port, _ = squid
    status, location, body = proxy.fetch(f"http://{ORIGIN_HOST}:{origin_port}/other/page")
    assert (status, location, body) == (200, "", "origin /other/page")


def test_squid_keyword_rule_and_exception(squid: tuple[Squid, int, int]) -> None:
    proxy, origin_port, _ = squid
    status, _, body = proxy.fetch(f"http://{ORIGIN_HOST}:{origin_port}/news/sussex-weather")
    assert (status, body) == (200, "origin /news/sussex-weather")
    status, location, _ = proxy.fetch(f"http://{ORIGIN_HOST}:{origin_port}/shop/sex-toys")
    assert status == 302 and parse_qs(urlsplit(location).query)["list"] == ["keywords"]


def test_squid_external_acl_mode(start_squid: StartSquid) -> None:
    proxy, origin_port, _ = start_squid("acl")
    listed = f"http://{ORIGIN_HOST}:{origin_port}/listed/page"
    status, _, _ = proxy.fetch(listed)
    assert status == 403, proxy.cache_log()
    status, _, body = proxy.fetch(f"http://{ORIGIN_HOST}:{origin_port}/news/sussex-weather")
    assert (status, body) == (200, "origin /news/sussex-weather")
    # The helper's tag (the category) reached Squid: its access log shows it.
    log = proxy.workdir / "access.log"
    deadline = time.monotonic() + 10
    while f"{listed} 403 tag=adult" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, (log.read_text(), proxy.cache_log())
        time.sleep(0.1)
