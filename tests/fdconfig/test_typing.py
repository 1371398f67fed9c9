"""fdconfig is mypy-clean: the Config tree is what every other package reads."""

from __future__ import annotations

from tests.filtercore.test_typing import _run


def test_fdconfig_is_mypy_clean() -> None:
    result = _run("mypy", "--no-incremental", "--cache-dir=/dev/null", "fdconfig")
    assert result.returncode == 0, result.stdout + result.stderr
