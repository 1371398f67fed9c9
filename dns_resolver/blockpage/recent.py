"""A bounded memory of recent blocks, so the block page can say why a host was blocked.

The resolver adds an entry for every block it answers under a policy; the block page
looks the requested host up here first (it knows the exact verdict, policy and reason)
and otherwise re-checks the host with the matcher under the HTTP client's policy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from filtercore.verdict import Verdict

DEFAULT_SIZE = 4096


class BlockInfo(NamedTuple):
    """Why one host was blocked."""

    host: str
    category: str
    list: str
    rule: str
    policy: str
    note: str


def block_info(host: str, verdict: Verdict, policy: str, note: str) -> BlockInfo:
    """A `BlockInfo` from a verdict (the rule text is read now, off the DNS path only
    when the page asks; here it is taken as the verdict has it)."""
    return BlockInfo(
        host, verdict.category or "", verdict.list or "", verdict.rule or "", policy, note
    )


class RecentBlocks:
    """host -> (verdict, policy, note) for the last `size` blocked hosts (LRU).

    `add` is called on the DNS path: it stores references only (the verdict is shared and
    immutable) and reads nothing from disk. The block page thread reads under a lock.
    """

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[Verdict, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, host: str, verdict: Verdict, policy: str, note: str) -> None:
        with self._lock:
            self._items[host] = (verdict, policy, note)
            self._items.move_to_end(host)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, host: str) -> BlockInfo | None:
        with self._lock:
            item = self._items.get(host)
        if item is None:
            return None
        verdict, policy, note = item
        return block_info(host, verdict, policy, note)

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["BlockInfo", "RecentBlocks", "block_info"]
