"""EDNS(0) as RFC 6891 and DNS Flag Day 2020 ask, on wire bytes.

Answers are kept without an OPT record internally (in the cache and in synthesized
answers); `finish` adds ours per client, because what goes into the OPT (DO echoed, our
payload size, an Extended DNS Error) and the size limit depend on the query, not on the
answer. Unknown options in a query are ignored and never echoed (RFC 6891 6.1.2).
"""

from __future__ import annotations

import struct

from dns_resolver import wire

DEFAULT_UDP_PAYLOAD = 1232  # DNS Flag Day 2020
PLAIN_UDP_LIMIT = 512  # RFC 1035, a client without EDNS

OPTION_EDE = 15  # RFC 8914
OPTION_PADDING = 12  # RFC 7830
PADDING_BLOCK = 468  # RFC 8467 4.1: the block length recommended for responses

# Extended DNS Error INFO-CODEs used here (RFC 8914 section 4).
EDE_OTHER = 0
EDE_STALE_ANSWER = 3
EDE_BLOCKED = 15
EDE_FILTERED = 17
EDE_NETWORK_ERROR = 23
EDE_NO_REACHABLE_AUTHORITY = 22

# Root owner, type, UDP size, extended RCODE, version, flags, RDLENGTH.
_OPT_FIXED = struct.Struct("!BHHBBHH")


def build_opt(
    udp_size: int, *, do: bool = False, ext_rcode: int = 0, options: bytes = b""
) -> bytes:
    """Pack an OPT record (version 0) with already encoded `options`."""
    return _OPT_FIXED.pack(
        0, wire.TYPE_OPT, udp_size, ext_rcode, 0, 0x8000 if do else 0, len(options)
    ) + options


def ede_option(info_code: int, extra_text: str = "") -> bytes:
    """Encode an Extended DNS Error option (RFC 8914 section 2)."""
    payload = struct.pack("!H", info_code) + extra_text.encode("utf-8")
    return struct.pack("!HH", OPTION_EDE, len(payload)) + payload


def udp_limit(edns: wire.Edns | None, ours: int = DEFAULT_UDP_PAYLOAD) -> int:
    """The largest UDP answer a client may get: min(client's size, ours), 512 without EDNS."""
    if edns is None:
        return PLAIN_UDP_LIMIT
    return max(PLAIN_UDP_LIMIT, min(edns.udp_size, ours))


def finish(
    body: bytes,
    edns: wire.Edns | None,
    *,
    limit: int | None,
    udp_size: int = DEFAULT_UDP_PAYLOAD,
    options: bytes = b"",
) -> bytes:
    """Turn an OPT-less answer into what the client gets.

    Adds our OPT (DO echoed, our payload size, `options` such as an EDE) when the query
    had EDNS, and truncates to `limit` bytes (None for TCP): a too large answer becomes
    the header with TC set, the question and the OPT, so the client retries over TCP.
    """
    opt = b""
    if edns is not None:
        opt = build_opt(udp_size, do=edns.do, options=options)
        arcount = ((body[10] << 8) | body[11]) + 1
        out = body[:10] + wire.pack_u16(arcount) + body[12:] + opt
    else:
        out = body
    if limit is None or len(out) <= limit:
        return out
    end = wire.question_end(body)
    flags = ((body[2] << 8) | body[3]) | wire.TC
    hdr = wire.header(
        (body[0] << 8) | body[1], flags, 1, 0, 0, 1 if opt else 0
    )
    return hdr + body[12:end] + opt


def pad(message: bytes, block: int = PADDING_BLOCK) -> bytes:
    """`message` with a Padding option in its OPT making its length a multiple of
    `block` (RFC 7830, the block-length policy of RFC 8467). Unchanged without an OPT
    (the query had no EDNS) or when the OPT is not the last record (not one of ours)."""
    try:
        records = wire.walk_records(message)
    except wire.WireError:
        return message
    if not records or records[-1].rtype != wire.TYPE_OPT or records[-1].end != len(message):
        return message
    opt = records[-1]
    fill = -(len(message) + 4) % block
    rdlength = opt.rdlength + 4 + fill
    if rdlength > 0xFFFF:
        return message
    return (
        message[: opt.rdata_offset - 2]
        + wire.pack_u16(rdlength)
        + message[opt.rdata_offset :]
        + struct.pack("!HH", OPTION_PADDING, fill)
        + bytes(fill)
    )


def error_response(
    qid: int,
    query_flags: int,
    rcode: int,
    question: bytes = b"",
    edns: wire.Edns | None = None,
    *,
    udp_size: int = DEFAULT_UDP_PAYLOAD,
    options: bytes = b"",
) -> bytes:
    """A header-only answer with `rcode` (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS).

    The question is echoed when it could be read; an OPT is added when the query had one
    (BADVERS needs it: its upper bits live in the OPT's extended RCODE).
    """
    flags = wire.response_flags(query_flags, rcode & 0xF)
    qd = 1 if question else 0
    if edns is None:
        return wire.header(qid, flags, qd, 0, 0, 0) + question
    opt = build_opt(udp_size, do=edns.do, ext_rcode=rcode >> 4, options=options)
    return wire.header(qid, flags, qd, 0, 0, 1) + question + opt


def extended_rcode(data: bytes) -> int:
    """The full 12-bit RCODE of a message (header bits plus the OPT's upper bits)."""
    rcode = wire.rcode_of(data)
    for record in wire.walk_records(data):
        if record.rtype == wire.TYPE_OPT:
            rcode |= data[record.ttl_offset] << 4
    return rcode


def ede_codes(data: bytes) -> list[tuple[int, str]]:
    """The Extended DNS Errors of a message as (info code, extra text) pairs."""
    found: list[tuple[int, str]] = []
    for record in wire.walk_records(data):
        if record.rtype != wire.TYPE_OPT:
            continue
        pos = record.rdata_offset
        end = record.end
        while pos + 4 <= end:
            code, olen = struct.unpack_from("!HH", data, pos)
            pos += 4
            if code == OPTION_EDE and olen >= 2:
                info = struct.unpack_from("!H", data, pos)[0]
                found.append((info, data[pos + 2 : pos + olen].decode("utf-8", "replace")))
            pos += olen
    return found
