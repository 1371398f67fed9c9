"""Stopping the child processes tests start (Squid, Prometheus, helpers): always bounded."""

from __future__ import annotations

import subprocess


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM `proc` and wait up to `timeout` s, then SIGKILL it; its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
