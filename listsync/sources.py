"""Where a data directory keeps what listsync writes.

A list source given by URL is downloaded into `<data_dir>/sources/<name>/` (the naming rules
are `fdconfig.lists`'s, since the config loader computes that path), beside `meta.json`
holding the validators and the facts of the last good version. The compiled snapshot of all
lists is `<data_dir>/lists.snap` and the audit trail `<data_dir>/audit.jsonl`.
"""

from __future__ import annotations

SNAPSHOT_NAME = "lists.snap"
AUDIT_NAME = "audit.jsonl"
META_NAME = "meta.json"
INCOMING_DIR = "incoming"  # a download waiting for validation, same file name as the body
