"""Unit tests for dns_resolver.steps.acl."""

from __future__ import annotations

import ipaddress

import pytest

from dns_resolver.steps.acl import Acl


def test_default_allows_loopback_and_private_only() -> None:
    acl = Acl()
    for ok in ("127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "172.16.5.5", "fd00::1"):
        assert acl.allowed(ok), ok
    for bad in ("8.8.8.8", "2001:db8::1", "172.32.0.1", "not-an-ip"):
        assert not acl.allowed(bad), bad


def test_deny_beats_allow_and_mapped_addresses() -> None:
    acl = Acl(["127.0.0.0/8", ipaddress.ip_network("::1/128")], ["127.0.0.2/32"])
    assert acl.allowed("127.0.0.1")
    assert not acl.allowed("127.0.0.2")
    assert not acl.allowed("::ffff:127.0.0.2")
    assert acl.allowed("::ffff:127.0.0.1")
    assert acl.allowed("::1")
    assert acl.allowed("127.0.0.1")  # memoised answer is the same


def test_bad_cidr_is_named() -> None:
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        Acl(["10.0.0.0/33"])
