"""The optional query log: one JSON object per answered query, written off the query path.

Never on by default (`[querylog] enabled = true` turns it on). `QueryLog.log()` only appends
a tuple to a bounded in-memory queue; a writer thread anonymises, formats and writes the
queued entries in batches every `flush_interval` seconds, so the serving code never waits
on the disk. When the queue is full (the disk cannot keep up) entries are dropped and
counted rather than slowing the resolver down.

Client addresses are anonymised by default: truncated to their /24 (IPv4) or /48 (IPv6)
network, or replaced by a keyed hash whose key is random per start (so the same client
can be followed within one run, but not across restarts or by anyone without the key), or
left as they are with `anonymize = "none"`.

The file is rotated when it would grow past `max_bytes`: the current file becomes
`PATH.1` (replacing an older one), so the log never takes more than about twice
`max_bytes` on disk.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dnslib import QTYPE, RCODE

from dns_resolver.acl import client_ip
from dns_resolver.querystore import Row, rows_from_json
from fdconfig import ANONYMIZE_MODES, QueryLogConfig
from filtercore._digest import siphash24
from filtercore.verdict import Verdict

__all__ = ["QueryLog", "anonymize_client"]

log = logging.getLogger(__name__)

# (time, client, qname, qtype, protocol, result, verdict, category, list, rcode, duration)
_Entry = tuple[
    float,
    str,
    str,
    int,
    str,
    str,
    "Verdict | None",
    "str | None",
    "str | None",
    "int | None",
    float,
]


def anonymize_client(address: str, mode: str, key: bytes = b"") -> str | None:
    """The client address as the log shows it under `mode` (see the module docstring).

    Returns None for an address that is not an IP literal in "truncate" mode.
    """
    if mode == "none":
        return address
    if mode == "hash":
        # SipHash-2-4, a keyed PRF: the UDP fast path computes the same pseudonyms in C.
        return f"{siphash24(key, address.encode()):016x}"
    if mode != "truncate":
        raise ValueError(f"unknown anonymize mode {mode!r}; one of {ANONYMIZE_MODES}")
    ip = client_ip(address)
    if ip is None:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


_CLIENT_CACHE_SIZE = 65536
_encode_string = json.encoder.encode_basestring  # the C string encoder json.dumps uses


def _dumps(value: str | None) -> str:
    """JSON for a string or None (much cheaper than json.dumps for these two cases)."""
    return "null" if value is None else _encode_string(value)


@functools.cache
def _code_name(table: object, code: int | None) -> str:
    """The JSON for a qtype or rcode: its mnemonic, or the number when unknown."""
    if code is None:
        return "null"
    name = table.get(code)  # type: ignore[attr-defined]
    return _dumps(name if isinstance(name, str) else str(code))


class QueryLog:
    """A JSON-lines query log with anonymised clients and size-bounded rotation.

    Each line has: `timestamp` (ISO 8601 UTC, ms), `client`, `qname`, `qtype` (mnemonic),
    `protocol`, `result`, `category`, `list`, `rcode` (mnemonic), `duration_ms`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        anonymize: str = "truncate",
        max_bytes: int = 100 * 1024 * 1024,
        flush_interval: float = 0.5,
        queue_limit: int = 100_000,
    ) -> None:
        if anonymize not in ANONYMIZE_MODES:
            raise ValueError(f"unknown anonymize mode {anonymize!r}; one of {ANONYMIZE_MODES}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.anonymize = anonymize
        self.max_bytes = max_bytes
        self.flush_interval = flush_interval
        self.queue_limit = queue_limit
        self.dropped = 0
        self.written = 0
        # Lines formatted elsewhere and not handed over yet (the C fast path's buffer):
        # taken before each entry logged here, so the file stays in answer order.
        self.earlier_lines: Callable[[], bytes] | None = None
        # Whoever wants the queries as rows too (the console's store and statistics): fed
        # by the writer thread, after the file, so the query path pays nothing for them.
        self.sinks: list[Callable[[list[Row]], None]] = []
        # For the sinks' rows: client address, category -> (policy, why the client has
        # it, the schedule or allowance note). Asked on the writer thread.
        self.describe_client: Callable[[str, str | None], tuple[str, str, str | None]] | None
        self.describe_client = None
        # A fresh random key each start: hashes link queries within one run only.
        self._key = secrets.token_bytes(16)
        # deque.append/popleft are atomic, so producers and the writer need no lock.
        self._queue: collections.deque[_Entry | bytes] = collections.deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()  # one drain at a time: flush() vs the writer
        self._closed = False
        self._file = self.path.open("ab")
        self._size = self._file.tell()
        self._write_error_reported = False
        # Writer-thread caches: the formatted second, and clients already anonymised.
        self._stamp_second = -1
        self._stamp_prefix = ""
        self._clients: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="querylog", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: QueryLogConfig) -> QueryLog | None:
        """The log `config` asks for, or None when it is disabled."""
        if not config.enabled:
            return None
        return cls(config.path, anonymize=config.anonymize, max_bytes=config.max_bytes)

    def log(
        self,
        client: str,
        qname: str,
        qtype: int,
        protocol: str,
        result: str,
        duration: float,
        *,
        verdict: Verdict | None = None,
        rcode: int | None = None,
        category: str | None = None,
        list_name: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Queue one entry (cheap; nothing is formatted or written here).

        `qtype` and `rcode` are numeric codes; `duration` is in seconds; `timestamp`
        defaults to now. A `verdict` supplies `category` and `list` unless they are given.
        """
        if self._closed:
            return
        if self.earlier_lines is not None:
            self.log_formatted(self.earlier_lines())  # keep the lines in answer order
        if len(self._queue) >= self.queue_limit:
            self.dropped += 1
            return
        self._queue.append(
            (
                time.time() if timestamp is None else timestamp,
                client,
                qname,
                qtype,
                protocol,
                result,
                verdict,
                category,
                list_name,
                rcode,
                duration,
            )
        )

    def log_formatted(self, lines: bytes) -> None:
        """Queue lines already formatted as `_format` would (the UDP fast path writes its
        own, in C: `FastPath.set_querylog`)."""
        if self._closed or not lines:
            return
        if len(self._queue) >= self.queue_limit:
            self.dropped += lines.count(b"\n")
            return
        self._queue.append(lines)  # type: ignore[arg-type]

    def fast_path_settings(self) -> tuple[int, bytes, dict[int, str]]:
        """(anonymize mode index, pseudonym key, {qtype code: JSON}) for the C writer."""
        names = {
            code: _code_name(QTYPE, code)
            for code in range(65536)
            if QTYPE.get(code) != str(code)
        }
        return ANONYMIZE_MODES.index(self.anonymize), self._key, names

    def flush(self) -> None:
        """Write everything queued so far (from any thread); returns when it is on disk."""
        with self._flush_lock:
            self._drain()

    def close(self) -> None:
        """Flush and stop the writer. Idempotent; later `log()` calls are ignored."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()
        self._drain()
        self._file.close()

    # -- writer thread --

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            with self._flush_lock:
                self._drain()

    def _format(self, entry: _Entry) -> bytes:
        """One JSON line. Runs on the writer thread; built by hand from cached pieces since
        `json.dumps` of a dict, `datetime.isoformat` and `ipaddress` cost ~20 µs a line."""
        (ts, client, qname, qtype, protocol, result, verdict, category, list_name, rcode,
         duration) = entry  # fmt: skip
        if verdict is not None:
            category = category or verdict.category
            list_name = list_name or verdict.list
        second = int(ts)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = min(int((ts - second) * 1000), 999)
        anon = self._clients.get(client)
        if anon is None:
            if len(self._clients) >= _CLIENT_CACHE_SIZE:
                self._clients.clear()
            anon = self._clients[client] = _dumps(
                anonymize_client(client, self.anonymize, self._key)
            )
        return (
            f'{{"timestamp":"{self._stamp_prefix}.{millis:03d}Z","client":{anon},'
            f'"qname":{_dumps(qname)},"qtype":{_code_name(QTYPE, qtype)},'
            f'"protocol":{_dumps(protocol)},"result":{_dumps(result)},'
            f'"category":{_dumps(category)},"list":{_dumps(list_name)},'
            f'"rcode":{_code_name(RCODE, rcode)},"duration_ms":{round(duration * 1000, 3)}}}\n'
        ).encode()

    def _row(self, entry: _Entry) -> Row:
        """The entry as a `querystore` row (its client anonymised like the line's)."""
        (ts, client, qname, qtype, protocol, result, verdict, category, list_name, rcode,
         duration) = entry  # fmt: skip
        anon = anonymize_client(client, self.anonymize, self._key)
        rule = None
        if verdict is not None:
            category = category or verdict.category
            list_name = list_name or verdict.list
            rule = verdict.rule
        policy = client_why = note = None
        if self.describe_client is not None:
            policy, client_why, note = self.describe_client(client, category)
        qtype_name = QTYPE.get(qtype)
        rcode_name = RCODE.get(rcode) if rcode is not None else None
        return (
            ts, anon, qname, qtype_name if isinstance(qtype_name, str) else str(qtype),
            protocol, result, rcode_name if isinstance(rcode_name, str) else rcode, category,
            list_name, rule, policy, client_why, note, None, int(result == "cached"), None,
            round(duration * 1000, 3),
        )  # fmt: skip

    def _described(self, rows: list[Row]) -> list[Row]:
        """Rows of the C writer's lines with their policy, when the log keeps addresses as
        they are (an anonymised address cannot tell which policy the client has)."""
        describe = self.describe_client
        if describe is None or self.anonymize != "none":
            return rows
        out = []
        for row in rows:
            policy, client_why, note = describe(row[1], row[7])
            out.append((*row[:10], policy, client_why, note, *row[13:]))
        return out

    def _feed_sinks(self, rows: list[Row]) -> None:
        for sink in self.sinks:
            try:
                sink(rows)
            except Exception:  # a console bug must not stop the log itself
                log.exception("query log: a sink failed; its rows are lost")

    def _drain(self) -> None:
        queue = self._queue
        lines: list[bytes] = []
        rows: list[Row] | None = [] if self.sinks else None
        while queue:
            entry = queue.popleft()
            if isinstance(entry, bytes):
                split = entry.splitlines(keepends=True)
                lines += split
                if rows is not None:
                    rows += self._described(rows_from_json(split))
            else:
                lines.append(self._format(entry))
                if rows is not None:
                    rows.append(self._row(entry))
        if rows:
            self._feed_sinks(rows)
        if not lines or self._file.closed:
            return
        try:
            batch_start = 0
            size = 0
            for i, line in enumerate(lines):
                if self._size + size + len(line) > self.max_bytes and (self._size + size) > 0:
                    self._file.write(b"".join(lines[batch_start:i]))
                    self._rotate()
                    batch_start, size = i, 0
                size += len(line)
            self._file.write(b"".join(lines[batch_start:]))
            self._size += size
            self._file.flush()
            self.written += len(lines)
        except OSError as e:
            # A full or read-only disk must not take the resolver down; say so once.
            self.dropped += len(lines)
            if not self._write_error_reported:
                self._write_error_reported = True
                log.warning("query log %s: cannot write (%s); dropping entries", self.path, e)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("ab")
        self._size = 0
