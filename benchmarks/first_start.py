"""The embedded default's first start, timed: how soon it answers, and how soon a full-size
adult category downloaded in the background is in service.

Run as `python -m benchmarks.first_start [--names 4600000]`; prints one JSON object. A
loopback HTTP server stands in for UT1 (`FILTERDNS_UT1_BASE_URL`) with a synthetic
`adult.tar.gz` of `--names` names and three one-name categories; `filterdns serve` runs
with no config, an empty data directory and a dead upstream (blocked names never need it),
and `dig` polls a bundled gambling name and the last synthetic name every 0.2 s until the
latter is blocked. Figures: seconds until the first answer, seconds until the download is
in service, how often the bundled name was not blocked meanwhile (should be 0), and the
server's VmRSS/VmHWM at start and at the end (MiB). Everything runs in a temporary folder,
removed afterwards.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.synthetic import synthetic_names

BUNDLED_NAME = "0-casino.info"  # the first line of lists/default/ut1/gambling/domains


def ut1_archive(category: str, names: Sequence[str]) -> bytes:
    """A UT1 category archive as UT1 publishes it: `<category>/domains` and `usage`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member, text in (("domains", "\n".join(names) + "\n"), ("usage", "black\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"{category}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(port: int, name: str) -> str:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), name, "A", "+tries=1", "+time=1"],
        capture_output=True, text=True, timeout=10,
    ).stdout
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return "no answer"


def rss_mib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=4_600_000)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filterdns-first-start-"))
    (work / "ut1").mkdir()
    names = synthetic_names(args.names)
    (work / "ut1" / "adult.tar.gz").write_bytes(ut1_archive("adult", names))
    for category in ("redirector", "phishing", "malware"):
        (work / "ut1" / f"{category}.tar.gz").write_bytes(
            ut1_archive(category, [f"{category}-only.example"])
        )
    http = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(work / "ut1"))
    )
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(work / "xdg"),
        "FILTERDNS_UT1_BASE_URL": f"http://127.0.0.1:{http.server_address[1]}",
        "FILTERDNS_LOOPBACK_ONLY": "1",
    }
    argv = [sys.executable, "-m", "filterdns", "serve", "--listen", f"127.0.0.1:{port}",
            "--upstream", "127.0.0.1:9", "--metrics-listen", ""]
    started = time.monotonic()
    with open(work / "serve.stderr", "wb") as err:
        proc = subprocess.Popen(argv, env=env, stderr=err, stdin=subprocess.DEVNULL)
    try:
        while status(port, BUNDLED_NAME) == "no answer":
            if proc.poll() is not None or time.monotonic() - started > args.timeout:
                raise SystemExit(f"filterdns did not answer; see {work / 'serve.stderr'}")
        answering = time.monotonic() - started
        at_start = rss_mib(proc.pid)
        misses = polls = 0
        while time.monotonic() - started < args.timeout:
            polls += 1
            misses += status(port, BUNDLED_NAME) != "NXDOMAIN"
            if status(port, names[-1]) == "NXDOMAIN":
                break
            time.sleep(0.2)
        in_service = time.monotonic() - started
        print(json.dumps({
            "names": args.names,
            "archive_bytes": (work / "ut1" / "adult.tar.gz").stat().st_size,
            "answering_s": round(answering, 2),
            "in_service_s": round(in_service, 1),
            "polls": polls,
            "bundled_name_not_blocked": misses,
            "rss_mib_at_start": at_start,
            "rss_mib_at_end": rss_mib(proc.pid),
        }))
    finally:
        proc.terminate()
        proc.wait(10)
        http.shutdown()
    shutil.rmtree(work)  # kept, with serve.stderr, when the run failed


if __name__ == "__main__":
    main()
