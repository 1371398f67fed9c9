"""Wire-level DNS helpers that work on `bytes` directly.

Every query takes these steps (parse the header and question, find the OPT record, patch
a cached answer, build a small error answer), so they avoid dnslib/dnspython objects and
use only slicing and `struct`: the performance issue moves them to Cython unchanged in
shape. Names are returned lower-cased, without the trailing dot (the root is "").
"""

from __future__ import annotations

import struct

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2).
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

# Response codes (RFC 1035, RFC 6891 for the extended BADVERS).
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

# Record types this package looks at.
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_HINFO = 13
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_DNAME = 39
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

MAX_POINTERS = 64  # a longer chain of compression pointers is a loop


class WireError(ValueError):
    """A message that cannot be parsed (short, bad label, pointer loop, ...)."""


class Edns:
    """The OPT pseudo-record of a message (RFC 6891 6.1).

    Attributes:
        udp_size: the requestor's UDP payload size (values below 512 are treated as 512).
        ext_rcode: the upper 8 bits of the extended RCODE.
        version: the EDNS version (only 0 is defined).
        do: the DNSSEC OK bit.
        options: (code, data) pairs in message order.
    """

    __slots__ = ("udp_size", "ext_rcode", "version", "do", "options")

    def __init__(
        self,
        udp_size: int,
        ext_rcode: int = 0,
        version: int = 0,
        do: bool = False,
        options: tuple[tuple[int, bytes], ...] = (),
    ) -> None:
        self.udp_size = max(udp_size, 512)
        self.ext_rcode = ext_rcode
        self.version = version
        self.do = do
        self.options = options

    def __repr__(self) -> str:
        return (
            f"Edns(udp_size={self.udp_size}, version={self.version}, do={self.do}, "
            f"options={self.options!r})"
        )


class Query:
    """A parsed query: header fields, the question and the OPT record.

    `question` holds the question exactly as the client sent it (name, type, class), so a
    response can echo the client's letter case (DNS 0x20) by copying it.
    """

    __slots__ = ("id", "flags", "qname", "qtype", "qclass", "question", "edns")

    def __init__(
        self,
        qid: int,
        flags: int,
        qname: str,
        qtype: int,
        qclass: int,
        question: bytes,
        edns: Edns | None,
    ) -> None:
        self.id = qid
        self.flags = flags
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.question = question
        self.edns = edns

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def do(self) -> bool:
        return self.edns is not None and self.edns.do

    def __repr__(self) -> str:
        return f"Query(id={self.id}, qname={self.qname!r}, qtype={self.qtype}, edns={self.edns})"


class BadQuery(WireError):
    """A query with a readable header that must be answered with an error RCODE.

    Attributes:
        rcode: FORMERR, NOTIMP or BADVERS.
        qid, flags: from the header, for the error answer.
        question: the raw question when it could be read, else b"".
        edns: the OPT record when it could be read.
    """

    def __init__(
        self,
        reason: str,
        rcode: int,
        qid: int,
        flags: int,
        question: bytes = b"",
        edns: Edns | None = None,
    ) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.qid = qid
        self.flags = flags
        self.question = question
        self.edns = edns


def _escape_label(label: bytes) -> str:
    out = []
    for byte in label:
        if byte in (0x2E, 0x5C) or not 0x21 <= byte <= 0x7E:
            out.append(f"\\{byte:03d}")
        else:
            out.append(chr(byte))
    return "".join(out)


def name_text(labels: list[bytes]) -> str:
    """The lower-cased dotted text of wire labels, with odd bytes escaped.

    A dot or backslash inside a label, or a byte outside printable ASCII, is written as
    `\\DDD` (RFC 1035 5.1), so two different wire names never map to the same text: the
    text is the cache key, and `a.b` as one label must not share an entry with `a` + `b`.
    Escaped names contain a backslash, which the matcher refuses as a host name.
    """
    if not labels:
        return ""
    raw = b".".join(labels)
    if raw.isascii() and b"\\" not in raw and raw.count(b".") == len(labels) - 1:
        return raw.decode("ascii").lower()
    return ".".join(_escape_label(label) for label in labels).lower()


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a possibly compressed name at `offset`.

    Returns the lower-cased dotted name (no trailing dot, "" for the root) and the offset
    just after the name as it appears at `offset`.
    """
    labels: list[bytes] = []
    end = -1
    pointers = 0
    size = len(data)
    length_total = 0
    while True:
        if offset >= size:
            raise WireError("name runs past the end of the message")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length & 0xC0 == 0xC0:
            if offset + 1 >= size:
                raise WireError("truncated compression pointer")
            pointers += 1
            if pointers > MAX_POINTERS:
                raise WireError("compression pointer loop")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise WireError(f"unsupported label type {length:#x}")
        offset += 1
        if offset + length > size:
            raise WireError("label runs past the end of the message")
        labels.append(data[offset : offset + length])
        length_total += length + 1
        if length_total > 255:
            raise WireError("name longer than 255 bytes")
        offset += length
    if end < 0:
        end = offset
    return name_text(labels), end


def skip_name(data: bytes, offset: int) -> int:
    """Return the offset just after the (possibly compressed) name at `offset`."""
    size = len(data)
    while True:
        if offset >= size:
            raise WireError("name runs past the end of the message")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            if offset + 1 >= size:
                raise WireError("truncated compression pointer")
            return offset + 2
        if length & 0xC0:
            raise WireError(f"unsupported label type {length:#x}")
        offset += 1 + length


def _parse_opt(data: bytes, offset: int, rclass: int, ttl: int, rdlen: int) -> Edns:
    options: list[tuple[int, bytes]] = []
    pos = offset
    end = offset + rdlen
    while pos < end:
        if pos + 4 > end:
            raise WireError("truncated EDNS option")
        code, olen = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + olen > end:
            raise WireError("EDNS option runs past the OPT record")
        options.append((code, data[pos : pos + olen]))
        pos += olen
    return Edns(
        udp_size=rclass,
        ext_rcode=ttl >> 24,
        version=(ttl >> 16) & 0xFF,
        do=bool(ttl & 0x8000),
        options=tuple(options),
    )


def find_edns(data: bytes, offset: int, counts: tuple[int, int, int]) -> Edns | None:
    """Find the OPT record among the RRs starting at `offset`.

    `counts` is (ancount, nscount, arcount). Raises WireError on a malformed record or
    on more than one OPT record (RFC 6891 6.1.1: that is FORMERR).
    """
    ancount, nscount, arcount = counts
    size = len(data)
    edns: Edns | None = None
    for index in range(ancount + nscount + arcount):
        name_start = offset
        offset = skip_name(data, offset)
        if offset + 10 > size:
            raise WireError("truncated resource record")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, offset)
        offset += 10
        if offset + rdlen > size:
            raise WireError("record data runs past the end of the message")
        if rtype == TYPE_OPT:
            if index < ancount + nscount:
                raise WireError("OPT record outside the additional section")
            if edns is not None:
                raise WireError("more than one OPT record")
            if data[name_start] != 0:
                raise WireError("OPT record owner is not the root")
            edns = _parse_opt(data, offset, rclass, ttl, rdlen)
        offset += rdlen
    return edns


def parse_query(data: bytes) -> Query:
    """Parse a query from the wire.

    Raises:
        WireError: the message is unusable garbage (shorter than a header, or a response);
            it should be dropped without an answer.
        BadQuery: the header is readable but the query must get an error RCODE (FORMERR
            for QDCOUNT != 1 or a malformed question/OPT, NOTIMP for an unknown opcode,
            BADVERS for an EDNS version other than 0).
    """
    if len(data) < 12:
        raise WireError("shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data, 0)
    if flags & QR:
        raise WireError("a response, not a query")
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        raise BadQuery(f"opcode {opcode} not implemented", NOTIMP, qid, flags)
    if qdcount != 1:
        raise BadQuery(f"QDCOUNT is {qdcount}", FORMERR, qid, flags)
    # The question name of a query is never compressed: scan labels straight.
    offset = 12
    size = len(data)
    labels: list[bytes] = []
    try:
        while True:
            length = data[offset]
            if length == 0:
                offset += 1
                break
            if length & 0xC0:
                raise BadQuery("compressed or bad label in the question", FORMERR, qid, flags)
            labels.append(data[offset + 1 : offset + 1 + length])
            offset += 1 + length
        if offset + 4 > size or offset - 12 > 255:
            raise BadQuery("truncated question", FORMERR, qid, flags)
    except IndexError:
        raise BadQuery("truncated question", FORMERR, qid, flags) from None
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = data[12 : offset + 4]
    edns: Edns | None = None
    if ancount or nscount or arcount:
        try:
            edns = find_edns(data, offset + 4, (ancount, nscount, arcount))
        except WireError as exc:
            raise BadQuery(str(exc), FORMERR, qid, flags, question) from None
        if edns is not None and edns.version != 0:
            raise BadQuery(
                f"EDNS version {edns.version}", BADVERS, qid, flags, question, edns
            )
    qname = name_text(labels)
    return Query(qid, flags, qname, qtype, qclass, question, edns)


def question_end(data: bytes) -> int:
    """Offset just after the (single) question of a message."""
    return skip_name(data, 12) + 4


def parse_question(data: bytes) -> tuple[str, int, int]:
    """Return (lower-cased name, qtype, qclass) of a message's first question."""
    if len(data) < 12 or _U16.unpack_from(data, 4)[0] != 1:
        raise WireError("message does not carry exactly one question")
    name, offset = read_name(data, 12)
    if offset + 4 > len(data):
        raise WireError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return name, qtype, qclass


def encode_name(name: str) -> bytes:
    """Encode a dotted name (trailing dot optional) in uncompressed wire form."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise WireError(f"label longer than 63 bytes in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def response_flags(query_flags: int, rcode: int = NOERROR, *, aa: bool = False) -> int:
    """Header flags of our answer to a query: QR and RA set, opcode, RD and CD copied."""
    flags = QR | RA | (query_flags & (0x7800 | RD | CD)) | (rcode & 0xF)
    if aa:
        flags |= AA
    return flags


def header(qid: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    """Pack a 12-byte header."""
    return HEADER.pack(qid, flags, qd, an, ns, ar)


def rr(name_wire: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = CLASS_IN) -> bytes:
    """Pack one resource record with an already encoded owner name (or pointer)."""
    return name_wire + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata


QNAME_POINTER = b"\xc0\x0c"
"""A compression pointer to the question name, which always starts at offset 12."""


class RR:
    """A resource record located in a message (for inspection and cache bookkeeping)."""

    __slots__ = ("section", "offset", "rtype", "rclass", "ttl", "rdata_offset", "rdlength")

    def __init__(
        self,
        section: int,
        offset: int,
        rtype: int,
        rclass: int,
        ttl: int,
        rdata_offset: int,
        rdlength: int,
    ) -> None:
        self.section = section  # 1 answer, 2 authority, 3 additional
        self.offset = offset  # start of the owner name
        self.rtype = rtype
        self.rclass = rclass
        self.ttl = ttl
        self.rdata_offset = rdata_offset
        self.rdlength = rdlength

    @property
    def ttl_offset(self) -> int:
        return self.rdata_offset - 6

    @property
    def end(self) -> int:
        return self.rdata_offset + self.rdlength


def walk_records(data: bytes) -> list[RR]:
    """Locate every resource record of a message (one question assumed)."""
    if len(data) < 12:
        raise WireError("shorter than a DNS header")
    _, _, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data, 0)
    offset = 12
    for _ in range(qdcount):
        offset = skip_name(data, offset) + 4
    size = len(data)
    if offset > size:
        raise WireError("truncated question")
    records: list[RR] = []
    for section, count in ((1, ancount), (2, nscount), (3, arcount)):
        for _ in range(count):
            start = offset
            offset = skip_name(data, offset)
            if offset + 10 > size:
                raise WireError("truncated resource record")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, offset)
            offset += 10
            if offset + rdlen > size:
                raise WireError("record data runs past the end of the message")
            records.append(RR(section, start, rtype, rclass, ttl, offset, rdlen))
            offset += rdlen
    return records


def rcode_of(data: bytes) -> int:
    """The 4-bit header RCODE of a message."""
    return data[3] & 0xF


def strip_opt(data: bytes) -> tuple[bytes, list[RR]]:
    """Remove the OPT record (and anything after it) from a response.

    Returns the message without OPT (ARCOUNT adjusted) and its remaining records. Records
    after an OPT are dropped too, so no compression pointer can point past a removed
    byte; additional data is optional and OPT comes last in practice.
    """
    records = walk_records(data)
    for index, record in enumerate(records):
        if record.rtype == TYPE_OPT:
            kept = records[:index]
            arcount = sum(1 for r in kept if r.section == 3)
            body = bytearray(data[: record.offset])
            body[10:12] = _U16.pack(arcount)
            return bytes(body), kept
    return data, records


def adopt(data: bytes | bytearray, query: Query) -> bytearray:
    """A copy of an answer made to fit `query`: its ID, RD/CD bits and question bytes.

    The question is copied byte for byte so the client sees its own letter case (DNS 0x20);
    the caller guarantees it has the same length (same name, compared case-insensitively).
    AA is cleared and RA set: a forwarder's answers are never authoritative, and we
    offer recursion even when the upstream (an authoritative server) does not.
    """
    out = bytearray(data)
    flags = ((out[2] << 8) | out[3]) & ~(RD | CD | AA) | (query.flags & (RD | CD)) | RA
    struct.pack_into("!HH", out, 0, query.id, flags)
    out[12 : 12 + len(query.question)] = query.question
    return out


def set_id(data: bytes, qid: int) -> bytes:
    """Return the message with its ID replaced."""
    return _U16.pack(qid) + data[2:]


def read_u32(data: bytes, offset: int) -> int:
    return _U32.unpack_from(data, offset)[0]


def pack_u32(value: int) -> bytes:
    return _U32.pack(value)


def pack_u16(value: int) -> bytes:
    return _U16.pack(value)
