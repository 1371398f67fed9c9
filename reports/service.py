"""The report queue as a service: storage, audit trail, overrides and the resolver hooks.

`AdminService` is what the HTTP API (`reports.api`) calls; it knows nothing of HTTP.
Database and file work runs in worker threads (`asyncio.to_thread`), so the event loop
it shares with the DNS listeners never waits on a disk. The resolver is reached only
through three callables (docs/reports-api.md, "The resolver hook"):

- `check(name) -> Verdict`: the effective verdict, overrides included;
- `on_overrides(OverrideMatcher)`: put a new override list in force (called on the loop);
- `reload() -> dict` (async, optional): re-read the configuration and reload the lists;
  the answer of POST /api/reload (`App.reload_config`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from filtercore.categories import CategoryMap
from filtercore.matcher import parse_target
from filtercore.urlrules import split_squidguard_url
from filtercore.verdict import NO_MATCH, Verdict
from listsync.audit import REVIEW_DECISION, AuditLog
from listsync.sources import AUDIT_NAME
from reports.overrides import FILE_NAME, OverrideMatcher, write_overrides
from reports.ratelimit import RateLimiter
from reports.store import Accepted, Decided, Store, TokenInfo
from reports.submission import DecisionInput, Submission

log = logging.getLogger(__name__)

OVERRIDE_CHANGE = "override-change"
"""Audit record kind of every change of the override list (listsync.audit has the others)."""
LEAD_RAISED = "lead-raised"
"""Audit record kind of a lead put in the queue by the resolver (docs/leads.md)."""


class AdminService:
    """Reports, decisions and overrides, with their audit records.

    Args:
        store: the database.
        data_dir: where `overrides.toml` and `audit.jsonl` live.
        categories: the category map reports and decisions must use.
        limiter: the per-client submission limit.
        matcher: returns the resolver's effective matcher (overrides included), with
            `check(name)` and `check_url(url)`; None: the overrides alone.
        on_overrides: installs a new `OverrideMatcher` in the resolver.
        reload: re-reads the configuration and reloads the lists (POST /api/reload),
            returning `{"reloaded": bool, "config": "applied" | "rejected", ...}`; None
            when there is no resolver.
    """

    def __init__(
        self,
        store: Store,
        data_dir: str | Path,
        *,
        categories: CategoryMap | None = None,
        limiter: RateLimiter | None = None,
        matcher: Callable[[], Any] | None = None,
        on_overrides: Callable[[OverrideMatcher], None] | None = None,
        reload: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.overrides_path = self.data_dir / FILE_NAME
        self.audit = AuditLog(self.data_dir / AUDIT_NAME)
        self.categories = categories or CategoryMap.load()
        self.limiter = limiter or RateLimiter(6 / 60, 10)
        self._matcher = matcher
        self._on_overrides = on_overrides
        self._reload = reload
        self.overrides = OverrideMatcher((), source=str(self.overrides_path))
        # One override change at a time: the file is rewritten whole from the table.
        self._publish_lock = asyncio.Lock()
        self._published: tuple[int, str | None, int] | None = None

    # -- verdicts -------------------------------------------------------------------------

    def check(self, name: str) -> Verdict:
        """The verdict the resolver would give `name` now (overrides first).

        Without a resolver hook only the overrides are known; an unlisted name gets
        "none".

        Raises:
            InvalidNameError: not a host name.
        """
        if self._matcher is not None:
            return self._matcher().check(name)
        return self.overrides.check(name) or NO_MATCH

    def check_target(self, target: str) -> Verdict:
        """A host name or URL, told apart as `filterdns check` does.

        Raises:
            FilterError: neither a host name nor a URL.
        """
        text, is_url = parse_target(target)
        if not is_url:
            return self.check(text)
        if self._matcher is not None:
            return self._matcher().check_url(text)
        host, _ = split_squidguard_url(text, strip_label=False)
        return self.overrides.check(host) or NO_MATCH

    # -- overrides ------------------------------------------------------------------------

    async def sync_overrides(self) -> bool:
        """Publish the overrides if the table changed since the last publication (another
        node sharing the database decided something); True when it did."""
        if await asyncio.to_thread(self.store.overrides_version) == self._published:
            return False
        await self.publish_overrides()
        return True

    async def publish_overrides(self) -> OverrideMatcher:
        """Write the override table to `overrides.toml` and put it in force."""
        async with self._publish_lock:
            version = await asyncio.to_thread(self.store.overrides_version)
            rows = await asyncio.to_thread(self.store.overrides)
            await asyncio.to_thread(write_overrides, self.overrides_path, rows)
            matcher = await asyncio.to_thread(OverrideMatcher.load, self.overrides_path)
            self.overrides = matcher
            self._published = version
            if self._on_overrides is not None:
                self._on_overrides(matcher)
        log.info("overrides in force: %d hosts", len(matcher))
        return matcher

    async def delete_override(self, host: str, who: TokenInfo, reason: str) -> dict[str, Any]:
        """Remove an override (audited). Raises `store.NotFound`."""
        previous = await asyncio.to_thread(self.store.delete_override, host)
        await self._audit(
            {
                "kind": OVERRIDE_CHANGE,
                "host": host,
                "action": "remove",
                "category": None,
                "previous": previous,
                "reviewer": who.identity,
                "role": who.role,
                "reason": reason,
            }
        )
        await self.publish_overrides()
        return previous

    # -- reports --------------------------------------------------------------------------

    async def submit(self, submission: Submission, reporter: str | None) -> Accepted:
        """Store a report durably (committed before this returns)."""
        return await asyncio.to_thread(self.store.submit, submission, reporter)

    async def raise_lead(
        self, host: str, category: str | None, evidence: dict[str, Any]
    ) -> Accepted:
        """Put a newly observed domain in the queue as a lead (source "observed"), on
        record: `evidence` says why (counts and signals, never client addresses)."""
        accepted = await asyncio.to_thread(self.store.submit_lead, host, category, evidence)
        await self._audit(
            {
                "kind": LEAD_RAISED,
                "report_id": accepted.id,
                "host": host,
                "category": category,
                "source": "observed",
                "evidence": evidence,
            }
        )
        return accepted

    async def queue(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        """The queue with each target's current verdict (`verdict`) attached."""
        rows, total = await asyncio.to_thread(self.store.queue, **filters)
        for row in rows:
            row["verdict"] = self.verdict_of(row["host"])
        return rows, total

    async def report(self, report_id: int) -> dict[str, Any]:
        """One report, its decisions and its current verdict. Raises `store.NotFound`."""
        row = await asyncio.to_thread(self.store.report, report_id)
        row["verdict"] = self.verdict_of(row["host"])
        return row

    def verdict_of(self, host: str) -> dict[str, Any]:
        """`Verdict.as_dict()` for a stored host (stored hosts are valid names)."""
        return self.check(host).as_dict()

    async def decide(self, report_id: int, decision: DecisionInput, who: TokenInfo) -> Decided:
        """Record a decision, apply its override and audit both.

        The audit records are written after the database commit and before the override
        is put in force, so nothing takes effect that is not on record.

        Raises:
            store.NotFound, store.Conflict.
        """
        decided = await asyncio.to_thread(self.store.decide, report_id, decision, who.identity)
        report = decided.report
        await self._audit(
            {
                "kind": REVIEW_DECISION,
                "report_id": report["id"],
                "report_kind": report["kind"],
                "source": report["source"],
                "target": report["target"],
                "host": report["host"],
                "reports": report["count"],
                "action": decision.action,
                "category": decision.category,
                "reason": decision.reason,
                "reviewer": who.identity,
                "role": who.role,
            }
        )
        if decided.override is not None:
            await self._audit(
                {
                    "kind": OVERRIDE_CHANGE,
                    "host": decided.override["host"],
                    "action": decided.override["action"],
                    "category": decided.override["category"],
                    "previous": decided.previous,
                    "report_id": report["id"],
                    "report_kind": report["kind"],
                    "source": report["source"],
                    "reviewer": who.identity,
                    "role": who.role,
                    "reason": decision.reason,
                }
            )
            await self.publish_overrides()
        return decided

    # -- lists ----------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration and reload the lists (when a resolver is attached),
        and the overrides. The answer of POST /api/reload."""
        outcome: dict[str, Any] = {"reloaded": True}
        if self._reload is not None:
            outcome = await self._reload()
        await self.publish_overrides()
        return outcome

    async def audit_records(
        self, since: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """The audit trail (optionally from `since`, of one `kind`)."""
        return await asyncio.to_thread(self.audit.read, since, kind)

    async def _audit(self, record: dict[str, Any]) -> None:
        await asyncio.to_thread(self.audit.append, record)
