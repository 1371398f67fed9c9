"""The filterdns command line and the bundled data."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One source of truth: pyproject.toml's version, as installed (`pip install -e .`).
    __version__ = version("filterdns")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
