"""Google Safe Browsing URL canonicalisation and suffix/prefix expression expansion.

Confidential URL lists (DESIGN.md, hashed lists) hold SHA-256 digests of Safe Browsing
"expressions" such as ``b.c/1/``: a host suffix joined to a path prefix of a canonical URL.
To match them without the plain URL we must produce exactly the strings the list's
publisher hashed, so this module follows Google's published rules (Safe Browsing API v4,
"URLs and Hashing", https://developers.google.com/safe-browsing/v4/urls-hashing):

1. Strip surrounding white space; remove every tab, CR and LF (escaped ones stay).
2. Drop the fragment (everything from the first ``#``), *before* unescaping, so an
   escaped ``%23`` survives as a literal ``#``.
3. Percent-unescape the whole URL repeatedly until nothing changes, then split it into
   scheme, host, path and query (as Google's reference client does).
4. Host: drop user information and port, strip leading/trailing dots, collapse runs of
   dots, lower-case; IPv4 in any legal encoding (decimal, octal, hex, 1 to 4 parts)
   becomes four decimal octets; a bracketed IPv6 address is compressed; an IDN becomes
   its A-label (Punycode) form.
5. Path: collapse runs of ``/``, resolve ``.`` and ``..`` segments; an empty path is
   ``/``. The query is kept as it is (the path rules do not apply to it).
6. Percent-escape every byte <= 0x20, >= 0x7f, ``#`` and ``%`` with upper-case hex.

The work is done on bytes: unescaping can produce any byte, and IDN decoding and
re-escaping must see the UTF-8 bytes, not Python characters. A ``str`` argument is
encoded as UTF-8; pass ``bytes`` to canonicalise raw octets (``b"http://\\x01\\x80.com/"``).

Choices where the published text leaves room:

- The port is dropped, as in the document's ``www.gotaport.com:1234`` example.
- IPv4 parsing follows ``inet_aton``: every part but the last must fit one byte and the
  last fills the remaining bytes (``10.1.515`` is ``10.1.2.3``). A numeric-looking host
  that is not a legal address (``256.1.1.1``, five parts) is kept as a host name.
- An empty query (``q?``) stays in the canonical URL, as the examples show, but adds no
  expression of its own: ``path?`` would only duplicate ``path``.
- ``scheme:`` with no ``//`` (``mailto:x@y``) has no host and is rejected, while
  ``host:port/path`` without a scheme is read as an ``http`` URL.

Cost (pure Python, measured on the development VM): about 4.7 µs to canonicalise a
70-character URL with a query (3.6 µs for a bare host name), 12.6 µs for its ten
expression digests. URL checks serve proxies, not the per-query DNS path.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import NamedTuple

import idna

from filtercore.errors import InvalidURLError

MAX_HOST_SUFFIXES = 5  # the exact host plus up to 4 suffixes of its last five labels
MAX_PATH_PREFIXES = 4  # "/", "/a/", "/a/b/", "/a/b/c/"

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_NEEDS_ESCAPE = re.compile(rb"[\x00-\x20\x7f-\xff#%]")
# One part of an IPv4 address in inet_aton syntax: hex, octal or decimal.
_IPV4_SHAPE = re.compile(rb"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")
_DOTS = re.compile(rb"\.{2,}")
_SLASHES = re.compile(rb"/{2,}")
# "scheme://": RFC 3986 scheme characters.
_SCHEME = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://")
# "word:" not followed by a port number: a scheme without authority (mailto:, javascript:).
_OPAQUE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*:(?![0-9]*(?:[/?]|$))")
_WHITESPACE = b" \t\r\n\f\v"


class CanonicalURL(NamedTuple):
    """A canonical URL split into its parts, each already percent-escaped."""

    scheme: str
    host: str
    path: str
    query: str | None  # None when the URL has no "?" at all
    is_ip: bool  # an IPv4/IPv6 host, which gets no host-suffix expansion

    def __str__(self) -> str:
        query = "" if self.query is None else "?" + self.query
        return f"{self.scheme}://{self.host}{self.path}{query}"


def canonicalize(url: str | bytes) -> str:
    """Return the Safe Browsing canonical form of `url`, or raise `InvalidURLError`.

    >>> canonicalize("http://3279880203/blah")
    'http://195.127.0.11/blah'
    >>> canonicalize("http://host/%25%32%35")
    'http://host/%25'
    """
    return str(canonical_parts(url))


def canonical_parts(url: str | bytes) -> CanonicalURL:
    """Canonicalise `url` and return its parts (see the module docstring for the rules)."""
    raw = url.encode("utf-8", "surrogatepass") if isinstance(url, str) else bytes(url)
    text = raw.strip(_WHITESPACE).translate(None, b"\t\r\n")
    text = text.split(b"#", 1)[0]
    text = _unescape(text)
    if not text:
        raise InvalidURLError(_show(url), "empty URL")

    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower().decode("ascii")
        rest = text[match.end() :]
    elif text.startswith(b"//"):  # scheme-relative: the default scheme applies
        scheme, rest = "http", text[2:]
    elif _OPAQUE.match(text):
        raise InvalidURLError(_show(url), "no host (a URL of the form scheme:...)")
    else:  # "www.google.com/", "%20leadingspace.com/": the scheme defaults to http
        scheme, rest = "http", text

    end = len(rest)
    for separator in (b"/", b"?"):
        found = rest.find(separator)
        if found != -1 and found < end:
            end = found
    authority, rest = rest[:end], rest[end:]
    path, question, query = rest.partition(b"?")

    host, is_ip = _canonical_host(url, authority)
    return CanonicalURL(
        scheme,
        _escape(host),
        _escape(_canonical_path(path)),
        _escape(query) if question else None,
        is_ip,
    )


def expressions(url: str | bytes) -> list[str]:
    """Return the suffix/prefix expressions of `url`, in the documented order.

    For each host variant (the exact host, then up to four suffixes formed from its last
    five labels, longest first, never the top-level label alone; only the exact host for
    an IP address) the path variants follow: the exact path with its query, the exact
    path, then up to four prefixes from ``/`` adding one directory at a time. Duplicates
    are dropped, so there are at most 30.

    >>> expressions("http://a.b.c/1/2.html?param=1")[:4]
    ['a.b.c/1/2.html?param=1', 'a.b.c/1/2.html', 'a.b.c/', 'a.b.c/1/']
    """
    parts = canonical_parts(url)
    paths = _path_variants(parts.path, parts.query)
    return [host + path for host in _host_variants(parts.host, parts.is_ip) for path in paths]


def expression_digests(url: str | bytes) -> list[bytes]:
    """Return the SHA-256 digest of each expression of `url` (same order as `expressions`)."""
    return [hashlib.sha256(e.encode("ascii")).digest() for e in expressions(url)]


def _host_variants(host: str, is_ip: bool) -> list[str]:
    if is_ip:
        return [host]
    labels = host.split(".")
    # Suffixes start at most five labels from the end and stop before the last label.
    first = max(1, len(labels) - MAX_HOST_SUFFIXES)
    return [host] + [".".join(labels[i:]) for i in range(first, len(labels) - 1)]


def _path_variants(path: str, query: str | None) -> list[str]:
    variants = [path + "?" + query] if query else []
    variants.append(path)
    directories = path.split("/")[1:-1]  # components that are followed by a "/"
    prefix = "/"
    variants.append(prefix)
    for name in directories[: MAX_PATH_PREFIXES - 1]:
        prefix += name + "/"
        variants.append(prefix)
    return list(dict.fromkeys(variants))  # drop duplicates, keep the first position


def _unescape(text: bytes) -> bytes:
    """Percent-unescape until a fixed point (`%2525` -> `%25` -> `%`)."""
    while b"%" in text:
        unescaped = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), text)
        if unescaped == text:
            break
        text = unescaped
    return text


def _escape(text: bytes) -> str:
    """Percent-escape control bytes, space, non-ASCII, `#` and `%`, in upper-case hex."""
    escaped = _NEEDS_ESCAPE.sub(lambda m: b"%%%02X" % m.group(0)[0], text)
    return escaped.decode("ascii")


def _canonical_path(path: bytes) -> bytes:
    """Collapse `//` and resolve `.` and `..` segments (a trailing one leaves a `/`)."""
    if not path:
        return b"/"
    if b"/." not in path and b"//" not in path:  # the common case: nothing to resolve
        return path
    segments = _SLASHES.sub(b"/", path).split(b"/")[1:]  # the path starts with "/"
    kept: list[bytes] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == b"..":
            if kept:
                kept.pop()
        elif segment != b".":
            kept.append(segment)
            continue
        if index == last:  # "/a/b/.." is the directory "/a/", not the file "/a"
            kept.append(b"")
    return b"/" + b"/".join(kept)


def _canonical_host(url: str | bytes, authority: bytes) -> tuple[bytes, bool]:
    # User information never identifies the site; leading dots go before anything else
    # so that ".[::1]" is read the way its canonical form "[::1]" will be.
    host = authority.rpartition(b"@")[2].lstrip(b".")
    if host.startswith(b"["):
        bracket = host.find(b"]")
        if bracket == -1:
            raise InvalidURLError(_show(url), "unterminated IPv6 address")
        port = host[bracket + 1 :]
        if port and not (port.startswith(b":") and port[1:].isdigit() or port == b":"):
            raise InvalidURLError(_show(url), f"bad port {port.decode('latin-1')!r}")
        ipv6 = _canonical_ipv6(host[1:bracket])
        if ipv6 is None:
            raise InvalidURLError(_show(url), "bad IPv6 address")
        return ipv6, True
    name, colon, port = host.partition(b":")
    if colon:
        if port and not port.isdigit():
            raise InvalidURLError(_show(url), f"bad port {port.decode('latin-1')!r}")
        host = name
    host = _DOTS.sub(b".", host.strip(b".")).lower()
    if not host:
        raise InvalidURLError(_show(url), "no host")
    ipv4 = _parse_ipv4(host)
    if ipv4 is not None:
        return ipv4, True
    if not host.isascii():
        host = _to_a_labels(host)
    return host, False


def _parse_ipv4(host: bytes) -> bytes | None:
    """Parse an IPv4 address in any `inet_aton` form; None if `host` is not one."""
    if not _IPV4_SHAPE.fullmatch(host):  # most hosts are names: reject them cheaply
        return None
    values: list[int] = []
    for part in host.split(b"."):
        if part[:2] == b"0x":
            digits, base = part[2:], 16
        elif len(part) > 1 and part[:1] == b"0":
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if not digits:  # "0x" alone
            return None
        try:
            values.append(int(digits, base))
        except ValueError:  # "08": octal digits only
            return None
    last_bytes = 5 - len(values)  # a.b.c.d: 1 byte, a.b.c: 2, a.b: 3, a: 4
    if any(v > 0xFF for v in values[:-1]) or values[-1] >= 1 << (8 * last_bytes):
        return None
    address = 0
    for value in values[:-1]:
        address = (address << 8) | value
    address = (address << (8 * last_bytes)) | values[-1]
    return str(ipaddress.IPv4Address(address)).encode("ascii")


def _canonical_ipv6(text: bytes) -> bytes | None:
    try:
        address = ipaddress.IPv6Address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return b"[" + address.compressed.encode("ascii") + b"]"


def _to_a_labels(host: bytes) -> bytes:
    """Convert an IDN to A-labels; bytes that are not a valid IDN stay (to be escaped)."""
    try:
        return idna.encode(host.decode("utf-8"), uts46=True, transitional=False)
    except (UnicodeError, idna.IDNAError):
        return host


def _show(url: str | bytes) -> str:
    return url if isinstance(url, str) else url.decode("latin-1")
