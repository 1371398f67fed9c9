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

import calendar
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
from typing import Any

from dnslib import QTYPE, RCODE

from dns_resolver.observability.querystore import Row
from dns_resolver.steps.acl import client_ip
from fdconfig import ANONYMIZE_MODES, QueryLogConfig
from filtercore._digest import siphash24
from filtercore.verdict import Verdict

__all__ = ["QueryLog", "anonymize_client", "make_entry"]

log = logging.getLogger(__name__)

# (time, client, qname, qtype, protocol, result, verdict, category, list, rcode, duration,
#  decided_by, upstream)
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
    "str | None",
    "tuple[str, float] | None",
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
        # The upstream C forwarded a name to for a policy (its lines do not say which
        # set, so it is looked up from the routes C was given): fastpath.py.
        self.fast_upstream: Callable[[str, str | None], str | None] | None = None
        # True once C was told to write clients as they are (for the sinks' policies):
        # the writer anonymises its lines then (`fast_path_settings`).
        self._c_raw = False
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
        decided_by: str | None = None,
        upstream: tuple[str, float] | None = None,
    ) -> None:
        """Queue one entry (cheap; nothing is formatted or written here).

        `qtype` and `rcode` are numeric codes; `duration` is in seconds; `timestamp`
        defaults to now. A `verdict` supplies `category` and `list` unless they are given.
        `decided_by` names the step that decided (`querystore.DECIDED_BY`) and `upstream`
        the upstream that answered with its latency in seconds: the console's rows only.
        """
        if self._closed:
            return
        if self.earlier_lines is not None:
            self.log_formatted(self.earlier_lines())  # keep the lines in answer order
        if len(self._queue) >= self.queue_limit:
            self.dropped += 1
            return
        self._queue.append(
            make_entry(
                client, qname, qtype, protocol, result, duration, verdict=verdict,
                rcode=rcode, category=category, list_name=list_name, timestamp=timestamp,
                decided_by=decided_by, upstream=upstream,
            )
        )  # fmt: skip

    def log_entries(self, entries: list[_Entry]) -> None:
        """Queue entries `make_entry` made elsewhere (the serving process: querywriter.py)."""
        for entry in entries:
            if len(self._queue) >= self.queue_limit:
                self.dropped += 1
                continue
            self._queue.append(entry)

    def set_key(self, key: bytes) -> None:
        """Hash clients with `key` (16 bytes) from now on: every writer of one run
        (querywriter.py) gives a client the same pseudonym."""
        self._key = key
        self._clients.clear()

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
        """(anonymize mode index, pseudonym key, {qtype code: JSON}) for the C writer.

        With sinks (the console), C writes the clients as they are and this writer
        anonymises them before anything is stored: a row's policy is then the one of the
        client's real address, whatever `anonymize` says."""
        self._c_raw = bool(self.sinks)
        mode = "none" if self._c_raw else self.anonymize
        return ANONYMIZE_MODES.index(mode), self._key, self.fast_path_names()

    @staticmethod
    def fast_path_names() -> dict[int, str]:
        """{qtype code: its JSON} for the mnemonics C writes."""
        return {
            code: _code_name(QTYPE, code)
            for code in range(65536)
            if QTYPE.get(code) != str(code)
        }

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
         duration, _decided_by, _upstream) = entry  # fmt: skip
        if verdict is not None:
            category = category or verdict.category
            list_name = list_name or verdict.list
        second = int(ts)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = min(int((ts - second) * 1000), 999)
        anon = _dumps(self._anonymous(client))
        return (
            f'{{"timestamp":"{self._stamp_prefix}.{millis:03d}Z","client":{anon},'
            f'"qname":{_dumps(qname)},"qtype":{_code_name(QTYPE, qtype)},'
            f'"protocol":{_dumps(protocol)},"result":{_dumps(result)},'
            f'"category":{_dumps(category)},"list":{_dumps(list_name)},'
            f'"rcode":{_code_name(RCODE, rcode)},"duration_ms":{round(duration * 1000, 3)}}}\n'
        ).encode()

    def _anonymous(self, client: str) -> str | None:
        """`client` as the log shows it (cached: the same clients come back)."""
        try:
            return self._clients[client]
        except KeyError:
            if len(self._clients) >= _CLIENT_CACHE_SIZE:
                self._clients.clear()
            anon = self._clients[client] = anonymize_client(client, self.anonymize, self._key)
            return anon

    def _row(self, entry: _Entry) -> Row:
        """The entry as a `querystore` row (its client anonymised like the line's)."""
        (ts, client, qname, qtype, protocol, result, verdict, category, list_name, rcode,
         duration, decided_by, upstream) = entry  # fmt: skip
        anon = self._anonymous(client)
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
            list_name, rule, policy, client_why, note, decided_by, int(result == "cached"),
            upstream[0] if upstream else None, round(duration * 1000, 3),
            round(upstream[1] * 1000, 3) if upstream else None,
        )  # fmt: skip

    def _from_c(self, buffer: bytes, rows: list[Row] | None) -> tuple[bytes, int]:
        """The C fast path's lines: (the bytes for the file, how many lines), and their rows
        appended to `rows` when there are sinks.

        One pass of `str.split` per line, no JSON decoding: C writes one fixed layout
        (`_fastpath.pyx`, `FastPath._log`), so the fields sit at known places; a line
        that splits otherwise (a name with a quote) is decoded as JSON. Clients C wrote
        as they are (`fast_path_settings`) are described (policy, why) and anonymised
        here, for the rows and for the file alike."""
        count = buffer.count(b"\n")
        if rows is None and not self._c_raw:
            return buffer, count
        rewrite = self._c_raw and self.anonymize != "none"
        describe = self.describe_client if self._c_raw or self.anonymize == "none" else None
        upstream_of = self.fast_upstream
        # (name, policy) -> the upstream that answered: a batch repeats its names.
        upstreams: dict[tuple[str, str | None], str | None] = {}
        seconds = _SECONDS
        # (client, result, category, list) -> (anonymised client, the row's values from
        # `policy` to `cached`): worked out once per drain, not once per row.
        known: dict[tuple[str, str, str | None, str | None], tuple[Any, tuple[Any, ...]]] = {}
        file_lines = []
        for line in buffer.decode().splitlines():
            parts = line.split('"')
            size = len(parts)
            if size == 33:
                category = list_name = None
            elif size == 37:
                category, list_name = parts[27], parts[31]
            else:
                decoded = _c_parts(line)
                if decoded is None:
                    continue
                parts, fields = decoded
                category, list_name = parts[27], parts[31]
            result = parts[23]
            key = (parts[7], result, category, list_name)
            found = known.get(key)
            if found is None:
                found = known[key] = self._c_values(key, describe)
            anon, middle = found
            if rewrite:
                if size == 33 or size == 37:
                    parts[7] = anon or ""
                    line = '"'.join(parts)
                else:
                    line = json.dumps({**fields, "client": anon}, separators=(",", ":"))
            file_lines.append(line)
            if rows is None:
                continue
            stamp = parts[3]
            second = seconds.get(stamp[:19]) or _second(stamp[:19])
            duration = float(parts[-1][1:-1])
            qname = parts[11]
            upstream = None
            if result == "allowed" and upstream_of is not None:
                where = (qname, middle[0])
                upstream = upstreams.get(where, "")
                if upstream == "":
                    upstream = upstreams[where] = upstream_of(*where)
            rows.append((
                second + int(stamp[20:23]) / 1000, anon, qname, parts[15], parts[19], result,
                None, category, list_name, None, *middle, upstream, duration,
                duration if result == "allowed" else None,
            ))  # fmt: skip
        if not rewrite:
            return buffer, count
        return ("\n".join(file_lines) + "\n").encode() if file_lines else b"", count

    def _c_values(
        self,
        key: tuple[str, str, str | None, str | None],
        describe: Callable[[str, str | None], tuple[str, str, str | None]] | None,
    ) -> tuple[Any, tuple[Any, ...]]:
        """What the rows of C's lines with the same client, result and labels share: the
        anonymised client, and (policy, why, note, decided_by, cached)."""
        client, result, category, _list = key
        anon = self._anonymous(client) if self._c_raw else client
        policy = why = note = None
        if describe is not None:
            policy, why, note = describe(client, category)
        decided = _C_STEPS.get(result, "list") if note is None else note
        return anon, (policy, why, note, decided, int(result == "cached"))

    def _feed_sinks(self, rows: list[Row]) -> None:
        for sink in self.sinks:
            try:
                sink(rows)
            except Exception:  # a console bug must not stop the log itself
                log.exception("query log: a sink failed; its rows are lost")

    def _drain(self) -> None:
        queue = self._queue
        chunks: list[bytes] = []  # whole lines: one each, or a C buffer's lines together
        count = 0
        rows: list[Row] | None = [] if self.sinks else None
        while queue:
            entry = queue.popleft()
            if isinstance(entry, bytes):
                chunk, lines = self._from_c(entry, rows)
                chunks.append(chunk)
                count += lines
            else:
                chunks.append(self._format(entry))
                count += 1
                if rows is not None:
                    rows.append(self._row(entry))
        if rows:
            self._feed_sinks(rows)
        if not chunks or self._file.closed:
            return
        try:
            for chunk in chunks:
                self._write(chunk)
            self._file.flush()
            self.written += count
        except OSError as e:
            # A full or read-only disk must not take the resolver down; say so once.
            self.dropped += count
            if not self._write_error_reported:
                self._write_error_reported = True
                log.warning("query log %s: cannot write (%s); dropping entries", self.path, e)

    def _write(self, chunk: bytes) -> None:
        """Append whole lines, rotating first at the last line that still fits."""
        while self._size + len(chunk) > self.max_bytes and self._size + len(chunk) > 0:
            cut = chunk.rfind(b"\n", 0, max(self.max_bytes - self._size, 0)) + 1
            if cut == 0 and self._size == 0:
                cut = chunk.find(b"\n") + 1 or len(chunk)  # a line longer than the limit
            self._file.write(chunk[:cut])
            self._rotate()
            chunk = chunk[cut:]
        self._file.write(chunk)
        self._size += len(chunk)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("ab")
        self._size = 0


def make_entry(
    client: str,
    qname: str,
    qtype: int,
    protocol: str,
    result: str,
    duration: float,
    *,
    verdict: Any = None,
    rcode: int | None = None,
    category: str | None = None,
    list_name: str | None = None,
    timestamp: float | None = None,
    decided_by: str | None = None,
    upstream: tuple[str, float] | None = None,
) -> _Entry:
    """One entry of the queue (`QueryLog.log`'s arguments), its time now unless given."""
    return (
        time.time() if timestamp is None else timestamp, client, qname, qtype, protocol,
        result, verdict, category, list_name, rcode, duration, decided_by, upstream,
    )  # fmt: skip


# What decided a row of C's: cache hits, the upstream's answer, the rate limit; blocks
# are the list's unless their policy's note says otherwise (a schedule, block-now).
_C_STEPS = {"cached": "cache", "allowed": "upstream", "ratelimited": "ratelimit"}


def _c_parts(line: str) -> tuple[list[Any], dict[str, Any]] | None:
    """A C line that does not split as usual (a quote in the name), decoded as JSON: its
    fields where a split puts them, and the fields by name."""
    try:
        d = json.loads(line)
        parts: list[Any] = [""] * 37
        parts[3], parts[7], parts[11] = d["timestamp"], d["client"], d["qname"]
        parts[15], parts[19], parts[23] = d["qtype"], d["protocol"], d["result"]
        parts[27], parts[31] = d["category"], d["list"]
        parts[-1] = f":{d['duration_ms']}}}"
    except (ValueError, KeyError, TypeError):
        return None
    return parts, d


_SECONDS: dict[str, int] = {}


def _second(text: str) -> int:
    """UNIX time of "YYYY-MM-DDTHH:MM:SS" (UTC), cached: a batch shares a few seconds and
    strptime costs ~20 us."""
    found = _SECONDS.get(text)
    if found is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        found = _SECONDS[text] = calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    return found
