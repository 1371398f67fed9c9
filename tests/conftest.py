"""Settings every test process shares (and every `filterdns` it starts inherits).

- `FILTERDNS_LOOPBACK_ONLY=1`: a list source on a host that is not a loopback address
  refuses to download (listsync.fetch), so no test can reach UT1 or any real mirror; the
  tests that run the embedded default point its URLs at a loopback server
  (`FILTERDNS_UT1_BASE_URL`) or run `--offline`.
- `XDG_DATA_HOME` in a temporary folder of the session: the embedded default keeps its
  state there, never in the user's ~/.local/share. `STATE_DIRECTORY` (set by systemd) is
  removed for the same reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Set at import, before any fixture or test module reads them.
os.environ["FILTERDNS_LOOPBACK_ONLY"] = "1"
os.environ.pop("STATE_DIRECTORY", None)
_XDG_DATA_HOME = tempfile.mkdtemp(prefix="filterdns-tests-xdg-")
os.environ["XDG_DATA_HOME"] = _XDG_DATA_HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_XDG_DATA_HOME, ignore_errors=True)
