"""`filterdns squid-helper`: the matcher as a Squid helper on stdin/stdout.

Two of Squid's helper protocols are spoken (https://www.squid-cache.org/Doc/config/):

- ``--mode rewrite`` (`url_rewrite_program`; `store_id_program` has the same request
  format but other replies, so it is not served). Squid sends
  ``[channel-ID SP] URL [SP extras] NL``; the default
  `url_rewrite_extras` are ``%>a/%>A %un %>rm myip=%la myport=%lp``, i.e.
  ``client/fqdn user method myip=ADDR myport=PORT``. We answer
  ``[channel-ID SP] OK status=302 url="BLOCK-URL?host=...&category=...&list=..."`` for a
  blocked URL, ``ERR`` to leave the request alone, and ``BH message="..."`` when the line
  cannot be handled (malformed, or an internal fault).
- ``--mode acl`` (`external_acl_type`). Squid sends ``[channel-ID SP] values...`` as its
  FORMAT says; we expect ``%>ru %>a`` (the URL, then the client address) and decode the
  values, which Squid URL-encodes by default (``quote=url``). We answer ``OK`` when the URL
  is blocked (so ``http_access deny <that acl>`` denies it) with ``tag=CATEGORY`` and
  ``message=...``, ``ERR`` when it is not, ``BH message=...`` on a bad line. kv-pair values
  are URL-encoded, which Squid decodes for external ACL helpers.

With ``concurrency=N`` in Squid's helper options every line starts with a numeric
channel-ID, which is echoed; up to N requests are in flight and we answer them in order.
A line without one (concurrency 0) is answered without one. Lines are read in batches
and each batch's replies go out in one write, which is what makes the protocol cheap.

A malformed line gets ``BH`` and the helper goes on: it only exits when Squid closes its
stdin. SIGHUP reloads the lists (and the config) in a background thread while the old
matcher keeps answering; on failure the old lists stay and the error goes to stderr,
which Squid copies to cache.log.

Per-client policies: `PolicyLookup` maps the client address Squid reports to the
categories to block. With `--config` naming a config with `[policies]`, the client is
mapped as the resolver maps a query's source address (`ConfigPolicies`); otherwise every
category is blocked for every client.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import quote, unquote, urlencode

from filtercore import FilterError, Matcher, Verdict
from filtercore.urlrules import split_squidguard_url

log = logging.getLogger("filterdns.squid_helper")

PolicyLookup = Callable[[str | None], Collection[str] | None]
"""Maps a client address (None when Squid sent none) to the categories to block for it;
None means every category. The seam where per-client policies plug in."""

DEFAULT_BLOCK_URL = "http://127.0.0.1/filterdns-blocked"
READ_SIZE = 1 << 16


def block_all_categories(client: str | None) -> Collection[str] | None:
    """The default policy: every client gets every category blocked."""
    return None


def _quoted(value: str) -> str:
    """A kv-pair value in double quotes, escaped as Squid's helper reply parser reads it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _acl_value(value: str) -> str:
    """A kv-pair value URL-encoded (rfc1738), as Squid decodes external ACL replies."""
    return quote(value, safe="")


class SquidHelper:
    """Answers Squid helper lines from a matcher that SIGHUP (or `reload`) replaces.

    `load` builds a matcher (called at start and on each reload); `policy` maps a client
    address to the categories to block. The object is used from one thread, except that
    `reload` may run in another: it only swaps the `matcher` reference, which is atomic.
    """

    def __init__(
        self,
        load: Callable[[], Matcher],
        *,
        mode: str = "rewrite",
        block_url: str = DEFAULT_BLOCK_URL,
        policy: PolicyLookup = block_all_categories,
    ) -> None:
        if mode not in ("rewrite", "acl"):
            raise ValueError(f"unknown helper mode {mode!r} (rewrite or acl)")
        self._load = load
        self.mode = mode
        self.block_url = block_url
        self._block_joiner = "&" if "?" in block_url else "?"
        self.policy = policy
        # The default policy needs no client address: skip parsing the extras for it.
        self._uses_client = policy is not block_all_categories
        self.matcher = load()
        # Per-verdict reply parts (category and list, encoded once). Verdicts are shared
        # per rule, so this stays small; the verdict is kept so its id is not reused.
        self._parts: dict[int, tuple[Verdict, str]] = {}
        self._reload_lock = threading.Lock()
        self._reload_again = False

    # -- reload -------------------------------------------------------------------------

    def reload(self) -> bool:
        """Build a new matcher and swap it in; keep the old one on failure. True if swapped."""
        start = time.monotonic()
        try:
            matcher = self._load()
        except (FilterError, OSError, ValueError) as exc:
            log.error("reload failed, keeping the previous lists: %s", exc)
            return False
        except Exception:  # noqa: BLE001 - a reload must never kill the helper
            log.error("reload failed, keeping the previous lists:\n%s", traceback.format_exc())
            return False
        self.matcher = matcher
        self._parts = {}  # drop the old matcher's verdicts with it
        log.info(
            "lists reloaded: %s entries in %.2f s",
            f"{matcher.stats()['entries']:,}",
            time.monotonic() - start,
        )
        return True

    def reload_in_background(self) -> None:
        """Reload in a thread so requests keep being answered; coalesces repeated calls."""
        if not self._reload_lock.acquire(blocking=False):
            self._reload_again = True  # a reload is running: run one more after it
            return

        def run() -> None:
            try:
                while True:
                    self._reload_again = False
                    self.reload()
                    if not self._reload_again:
                        break
            finally:
                self._reload_lock.release()

        threading.Thread(target=run, name="squid-helper-reload", daemon=True).start()

    # -- one request --------------------------------------------------------------------

    def handle(self, line: str) -> str:
        """The reply line (with its newline) for one request line (without it)."""
        tokens = line.split()
        if not tokens:
            return 'BH message="empty request line"\n' if self.mode == "rewrite" else (
                "BH message=empty%20request%20line\n"
            )
        channel = ""
        first = tokens[0]
        if first.isdigit() and first.isascii():
            channel = first + " "
            del tokens[0]
            if not tokens:
                return channel + self._fault("no URL after the channel-ID")
        try:
            if self.mode == "rewrite":
                return channel + self._rewrite(tokens)
            return channel + self._acl(tokens)
        except FilterError as exc:
            return channel + self._fault(str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the helper
            log.error("internal error on %r:\n%s", line, traceback.format_exc())
            return channel + self._fault(f"internal error: {type(exc).__name__}: {exc}")

    def _fault(self, message: str) -> str:
        if self.mode == "rewrite":
            return f"BH message={_quoted(message)}\n"
        return f"BH message={_acl_value(message)}\n"

    def _categories(self, client: str | None) -> Collection[str] | None:
        return self.policy(client) if self._uses_client else None

    def _rewrite(self, tokens: list[str]) -> str:
        url = tokens[0]
        client = None
        if self._uses_client and len(tokens) > 1:
            # Extras `%>a/%>A ...`: the client address is before the first slash.
            client = tokens[1].split("/", 1)[0]
            if client == "-":
                client = None
        verdict = self.matcher.check_url(url, categories=self._categories(client))
        if not verdict.blocked:
            return "ERR\n"
        return f"OK status=302 url={_quoted(self._block_location(url, verdict))}\n"

    def _block_location(self, url: str, verdict: Verdict) -> str:
        host = split_squidguard_url(url, strip_label=False)[0]
        entry = self._parts.get(id(verdict))
        if entry is None or entry[0] is not verdict:
            parts = urlencode({"category": verdict.category or "", "list": verdict.list or ""})
            entry = (verdict, parts)
            self._parts[id(verdict)] = entry
        return f"{self.block_url}{self._block_joiner}{urlencode({'host': host})}&{entry[1]}"

    def _acl(self, tokens: list[str]) -> str:
        url = unquote(tokens[0])
        client = None
        if self._uses_client and len(tokens) > 1 and tokens[1] != "-":
            client = unquote(tokens[1])
        verdict = self.matcher.check_url(url, categories=self._categories(client))
        if verdict.blocked:
            category = verdict.category or ""
            message = f"blocked: category {category}, list {verdict.list}"
            return f"OK tag={_acl_value(category)} message={_acl_value(message)}\n"
        if verdict.action.value == "allow":
            return f"ERR message={_acl_value(f'allowed by list {verdict.list}')}\n"
        return "ERR\n"

    # -- the stream -----------------------------------------------------------------------

    def handle_batch(self, lines: list[str]) -> str:
        """The replies to many request lines, in order, as one string."""
        handle = self.handle
        return "".join([handle(line) for line in lines])

    def serve(self, fd_in: int = 0, fd_out: int = 1) -> None:
        """Answer request lines from `fd_in` until end of file.

        Everything available is read at once and each batch is answered with one write:
        with concurrency Squid has many lines in flight, and per-line reads, writes and
        flushes would cost more than the checks themselves.
        """
        pending = b""
        while True:
            chunk = os.read(fd_in, READ_SIZE)
            if not chunk:
                break
            data = pending + chunk
            end = data.rfind(b"\n")
            if end < 0:
                pending = data
                continue
            pending = data[end + 1 :]
            text = data[:end].decode("utf-8", "surrogateescape")
            if "\r" in text:
                text = text.replace("\r", "")
            reply = self.handle_batch(text.split("\n")).encode("utf-8", "surrogateescape")
            view = memoryview(reply)
            while view:
                view = view[os.write(fd_out, view) :]
        if pending.strip():
            # A last line without its newline: answer it too rather than drop it.
            last = self.handle(pending.decode("utf-8", "surrogateescape").rstrip("\r"))
            os.write(fd_out, last.encode("utf-8", "surrogateescape"))


def _loader(args: argparse.Namespace) -> Callable[[], Matcher]:
    """What `--snapshot`, `--list` or `--config` name, re-read on every call."""
    return lambda: _matcher_of(args)


def _matcher_of(args: argparse.Namespace) -> Matcher:
    from filterdns.cli import _matcher

    return _matcher(args)


class ConfigPolicies:
    """The resolver's `[policies]` for the helper: a client address, mapped as the resolver
    maps a query's source address (most specific network, else `default`), gives the
    categories that policy blocks now (schedules included).

    Daily allowances are not counted here (that is the resolver's job): a category under
    an allowance is allowed through the proxy while its schedule does not block it.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.table: Any = None

    def bind(self, matcher: Matcher) -> Matcher:
        """Recompute the policies against a newly loaded matcher; returns it."""
        from dns_resolver.steps.policy import PolicyTable, list_categories

        self.table = PolicyTable(
            self.config.policy,
            self.config.blocking,
            matcher.categories,
            list_categories(matcher),
        )
        return matcher

    def __call__(self, client: str | None) -> Collection[str] | None:
        table = self.table
        table.refresh()  # cheap until the next schedule boundary
        return table.select(client or "").policy.names


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `squid-helper` to an argparse subparsers object; returns its parser."""
    from filterdns.cli import _add_list_options

    parser = subparsers.add_parser(
        "squid-helper",
        help="answer Squid url_rewrite_program / external_acl_type requests",
        description=(
            "Speak Squid's helper protocol on stdin/stdout. --mode rewrite (the default) is "
            "for url_rewrite_program: a blocked URL is redirected (302) to --block-url with "
            "host, category and list as query parameters. --mode acl is for "
            "external_acl_type with FORMAT '%%>ru %%>a': OK (with tag=CATEGORY) means "
            "blocked. Channel-IDs (concurrency=N) are supported. SIGHUP reloads the lists."
        ),
    )
    _add_list_options(parser)
    parser.add_argument(
        "--block-url",
        default=DEFAULT_BLOCK_URL,
        metavar="URL",
        help=f"the block page blocked URLs are redirected to (default {DEFAULT_BLOCK_URL})",
    )
    parser.add_argument(
        "--mode",
        choices=("rewrite", "acl"),
        default="rewrite",
        help="rewrite: url_rewrite_program replies; acl: external_acl_type replies",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the helper until Squid closes stdin; returns the exit status."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("filterdns squid-helper[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    load = _loader(args)
    policy: PolicyLookup = block_all_categories
    if args.config and not args.lists and not args.snapshot:
        from fdconfig import load_config

        config = load_config(args.config)
        if config.policy.enabled:
            policies = ConfigPolicies(config)
            policy = policies

            def load() -> Matcher:
                # The same lists, with the policies rebound to their categories.
                return policies.bind(_matcher_of(args))

    helper = SquidHelper(load, mode=args.mode, block_url=args.block_url, policy=policy)
    signal.signal(signal.SIGHUP, lambda signum, frame: helper.reload_in_background())
    # Squid stops a helper by closing its stdin; SIGINT/SIGPIPE should end it quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        helper.serve()
    except KeyboardInterrupt:
        return 130
    return 0
