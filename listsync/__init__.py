"""List sources that stay fresh: downloads, a cache, validation, an audit trail, and
snapshot rebuilds off the serving path.

- `listsync.sources`: where a source's cached copy, the snapshot and the audit log live.
- `listsync.fetch`: one conditional, size- and time-limited download with integrity checks.
- `listsync.update`: `update_sources` (fetch, validate, apply or keep, compile, verify,
  rename) and `diff_source` (what a pending update would change).
- `listsync.audit`: the append-only JSON-lines audit trail.
- `listsync.reloader`: `ListReloader`, the resolver's refresh timers and child-process
  rebuilds.
- `listsync.cli`: `filterdns lists update | history | diff`.
"""

from listsync.audit import AuditLog
from listsync.reloader import ListReloader
from listsync.update import SourceResult, UpdateReport, diff_source, update_sources

__all__ = [
    "AuditLog",
    "ListReloader",
    "SourceResult",
    "UpdateReport",
    "diff_source",
    "update_sources",
]
