"""The event loop `filterdns serve` runs on: uvloop when installed, else asyncio's own.

The UDP fast path returns to the loop once per readable event (a batch of up to 64
datagrams); asyncio's pure-Python loop then costs about 10 % of the server's CPU under
load, uvloop's a fraction of that (`docs/resolver-fastpath.md`). The code uses nothing
uvloop lacks (no `sock_recvfrom`: upstream sockets are connected and use `sock_recv`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new loop (uvloop if it can be imported)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
