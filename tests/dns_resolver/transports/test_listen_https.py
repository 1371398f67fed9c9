"""DNS over HTTPS (RFC 8484) with real clients against `filterdns serve`: kdig (`+https`,
`+https-get`), curl's `--doh-url` fetching a page, dnspython over HTTP/2 (httpx), the
ClientID in the path, Cache-Control, the HTTP errors, broken HTTP/2, a flood of streams
and a slow client."""

from __future__ import annotations

import base64
import http.server
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest

from tests.dns_resolver.encrypted import (
    KID,
    doh_port,
    encrypted_config,
    log_lines,
    tls_connect,
    until,
)
from tests.dns_resolver.harness import LOOPBACK, FaultUpstream, ServerProcess, TestZone, kdig

Start = Callable[..., ServerProcess]
PAGE = "page.filterdns.test"


@pytest.fixture
def doh(filterdns_on_nsd: Start, tmp_path: Path) -> ServerProcess:
    config = encrypted_config(tmp_path)
    config["policies"]["kid"]["block_domains"] = [PAGE]
    config["local"] = {"records": [f"{PAGE} 60 IN A 127.0.0.1"], "nodefault": ["test"]}
    return filterdns_on_nsd(config)


def url(server: ServerProcess, path: str = "/dns-query") -> str:
    return f"https://{LOOPBACK}:{doh_port(server)}{path}"


def wire(name: str, qtype: str = "A") -> bytes:
    return dns.message.make_query(name, qtype, id=0).to_wire()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("method", ["+https", "+https-get"])
def test_kdig_with_and_without_a_client_id(doh: ServerProcess, method: str) -> None:
    port = doh_port(doh)
    extra = (method,) if method == "+https" else ("+https", method)
    plain = kdig(LOOPBACK, port, TestZone.BLOCKED, "A", *extra)
    assert plain.status == "NOERROR" and plain.rdata("A") == [TestZone.BLOCKED_A]
    kid = kdig(LOOPBACK, port, TestZone.BLOCKED, "A", f"+https=/dns-query/{KID}", *extra[1:])
    assert kid.status == "NXDOMAIN" and "policy=kid" in kid.ede_text
    unknown = kdig(LOOPBACK, port, TestZone.BLOCKED, "A", "+https=/dns-query/nobody", *extra[1:])
    assert unknown.status == "NOERROR"


@pytest.fixture
def page_server() -> Iterator[int]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"the page\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    thread.join(5)


def curl(doh_url: str, page: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--doh-insecure", "--doh-url", doh_url, page],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_curl_fetches_a_page_its_policy_allows(doh: ServerProcess, page_server: int) -> None:
    page = f"http://{PAGE}:{page_server}/"
    allowed = curl(url(doh), page)
    assert (allowed.returncode, allowed.stdout) == (0, "the page\n")
    blocked = curl(url(doh, f"/dns-query/{KID}"), page)
    assert blocked.returncode == 6, blocked.stderr  # CURLE_COULDNT_RESOLVE_HOST
    assert blocked.stdout == ""


def test_dnspython_over_http2(doh: ServerProcess, tmp_path: Path) -> None:
    port = doh_port(doh)
    cases = (("/dns-query", dns.rcode.NOERROR), (f"/dns-query/{KID}", dns.rcode.NXDOMAIN))
    for path, rcode in cases:
        for post in (True, False):
            answer = dns.query.https(
                dns.message.make_query(TestZone.BLOCKED, "A", use_edns=0), LOOPBACK, port=port,
                path=path,
                post=post, verify=False, timeout=5, http_version=dns.query.HTTPVersion.H2,
            )  # fmt: skip
            assert answer.rcode() == rcode, (path, post)
            assert any(o.otype == dns.edns.OptionType.PADDING for o in answer.options)
    assert until(lambda: len(log_lines(tmp_path / "queries.log")) >= 4)
    assert {line["protocol"] for line in log_lines(tmp_path / "queries.log")} == {"https"}
    assert doh.metric("filterdns_queries_total", protocol="https", result="blocked") == 2


@pytest.mark.parametrize("http2", [True, False])
def test_cache_control_and_the_http_errors(doh: ServerProcess, http2: bool) -> None:
    with httpx.Client(http2=http2, verify=False, timeout=5) as client:
        ok = client.get(url(doh), params={"dns": b64(wire(TestZone.WWW))})
        assert ok.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "application/dns-message"
        assert ok.headers["cache-control"] == f"max-age={TestZone.TTL}"
        assert dns.message.from_wire(ok.content).answer[0][0].to_text() == TestZone.WWW_A
        negative = client.get(url(doh), params={"dns": b64(wire(TestZone.NXDOMAIN))})
        assert negative.headers["cache-control"] == f"max-age={TestZone.NEGATIVE_TTL}"
        cases = [
            (client.get(url(doh), params={"dns": "not*base64!"}), 400),
            (client.get(url(doh)), 400),
            (client.get(url(doh), params={"dns": b64(b"\x01\x02\x03")}), 400),
            (client.post(url(doh), content=wire(TestZone.WWW),
                         headers={"content-type": "text/plain"}), 415),
            (client.post(url(doh), content=bytes(65_536),
                         headers={"content-type": "application/dns-message"}), 413),
            (client.get(url(doh, "/resolve"), params={"dns": b64(wire(TestZone.WWW))}), 404),
            (client.put(url(doh), content=wire(TestZone.WWW),
                        headers={"content-type": "application/dns-message"}), 405),
        ]  # fmt: skip
        assert [r.status_code for r, _ in cases] == [status for _, status in cases]
        assert cases[-1][0].headers["allow"] == "GET, POST"
        # After the errors the connection (HTTP/2) or a new one still answers.
        again = client.post(
            url(doh), content=wire(TestZone.WWW),
            headers={"content-type": "application/dns-message"},
        )
        assert again.status_code == 200
    errors = doh.metric("filterdns_listener_errors_total", transport="https", kind="http")
    assert errors == len(cases)


def test_a_broken_http2_preface_is_a_clean_close(doh: ServerProcess) -> None:
    with tls_connect(doh_port(doh), alpn=("h2",)) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(b"PRI * HTTP/1.1\r\n\r\nnot a preface at all\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    # Our SETTINGS frame (type 4), then the close (RFC 9113 3.4: a connection error).
    assert received[3] == 4
    kind = "http_protocol"
    assert doh.metric("filterdns_listener_errors_total", transport="https", kind=kind) == 1
    with httpx.Client(http2=True, verify=False, timeout=5) as client:
        assert client.get(url(doh), params={"dns": b64(wire(TestZone.WWW))}).status_code == 200


def test_a_flood_of_streams_is_reset_without_harming_the_others(
    filterdns_on_nsd: Start, make_fault_upstream: Callable[..., FaultUpstream], tmp_path: Path
) -> None:
    slow = make_fault_upstream(delay=1.0)
    config = encrypted_config(tmp_path, max_streams=4)
    config["forward"] = [{"domains": ["slow.example"], "servers": [slow.upstream]}]
    server = filterdns_on_nsd(config)
    with tls_connect(doh_port(server), alpn=("h2",)) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # The client ignores our SETTINGS_MAX_CONCURRENT_STREAMS: 20 streams at once.
        conn.remote_settings.max_concurrent_streams = 1000
        streams = []
        for i in range(20):
            stream_id = conn.get_next_available_stream_id()
            path = f"/dns-query?dns={b64(wire(f'n{i}.slow.example'))}"
            conn.send_headers(
                stream_id,
                [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", path)],
                end_stream=True,
            )
            streams.append(stream_id)
        sock.sendall(conn.data_to_send())
        statuses: dict[int, str] = {}
        reset: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while len(statuses) + len(reset) < len(streams) and time.monotonic() < deadline:
            data = sock.recv(65536)
            assert data, "the connection closed"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.StreamReset):
                    reset[event.stream_id] = event.error_code
            sock.sendall(conn.data_to_send())
        assert len(statuses) == 4 and set(statuses.values()) == {"200"}
        assert len(reset) == 16 and set(reset.values()) == {h2.errors.ErrorCodes.REFUSED_STREAM}
    refused = server.metric(
        "filterdns_listener_errors_total", transport="https", kind="refused_stream"
    )
    assert refused == 16


def test_a_slow_client_is_closed(filterdns_on_nsd: Start, tmp_path: Path) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path, idle_timeout=1.0))
    request = f"GET /dns-query?dns={b64(wire(TestZone.WWW))} HTTP/1.1\r\nhost: x\r\n\r\n"
    with tls_connect(doh_port(server), alpn=("http/1.1",)) as sock:
        started = time.monotonic()
        closed = False
        for char in request:  # a byte every 0.2 s
            try:
                sock.sendall(char.encode())
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        if not closed:
            sock.settimeout(3)
            closed = sock.recv(1) == b""
        assert closed and time.monotonic() - started < 5
    assert server.metric("filterdns_listener_errors_total", transport="https", kind="idle") >= 1
