"""The filterdns command line and the bundled data."""

__version__ = "0.1.0"
