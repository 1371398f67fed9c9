/* dnstap frames for the UDP fast path: one Frame Streams data frame (a 4-byte big-endian
 * length, then a protobuf `dnstap.Dnstap`) per message, encoded by hand from the published
 * dnstap.proto. dns_resolver/dnstap.py encodes the same fields the same way in Python.
 *
 * A size pass (out == NULL) and a write pass share one function, so the nested lengths
 * protobuf needs are known before the bytes are written. */
#ifndef FD_DNSTAP_H
#define FD_DNSTAP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int type;                 /* Message.Type: 5 CLIENT_QUERY, 6 CLIENT_RESPONSE,
                                 7 FORWARDER_QUERY, 8 FORWARDER_RESPONSE */
    int family;               /* SocketFamily: 1 INET, 2 INET6 */
    int protocol;             /* SocketProtocol: 1 UDP, 2 TCP, 3 DOT, 4 DOH */
    int peer;                 /* addr/port are the responder's (response_address/_port:
                                 the upstream of a forwarder message), else the client's */
    const uint8_t *addr;      /* query_address or response_address (4 or 16 bytes; none
                                 when addrlen is 0) */
    size_t addrlen;
    uint32_t port;            /* query_port or response_port */
    uint64_t qsec;            /* query_time_sec / _nsec */
    uint32_t qnsec;
    const uint8_t *query;     /* query_message, or NULL */
    size_t querylen;
    uint64_t rsec;            /* response_time_sec / _nsec (with a response) */
    uint32_t rnsec;
    const uint8_t *response;  /* response_message, or NULL */
    size_t responselen;
    const uint8_t *rule;      /* Policy.rule, or NULL when no policy applied */
    size_t rulelen;
    int action;               /* Policy.Action */
    const uint8_t *value;     /* Policy.value: the QNAME in wire form */
    size_t valuelen;
} fd_tap_msg;

static inline size_t fd_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    while (v > 0x7F) {
        if (out) out[n] = (uint8_t)((v & 0x7F) | 0x80);
        v >>= 7;
        n++;
    }
    if (out) out[n] = (uint8_t)v;
    return n + 1;
}

static inline size_t fd_bytes(uint8_t *out, uint8_t tag, const uint8_t *p, size_t len) {
    size_t n;
    if (out) out[0] = tag;
    n = 1 + fd_varint(out ? out + 1 : NULL, len);
    if (out) memcpy(out + n, p, len);
    return n + len;
}

static inline size_t fd_uint(uint8_t *out, uint8_t tag, uint64_t v) {
    if (out) out[0] = tag;
    return 1 + fd_varint(out ? out + 1 : NULL, v);
}

static inline size_t fd_time(uint8_t *out, uint8_t tag, uint64_t sec, uint32_t nsec) {
    /* *_time_sec (uint64, field tag) then *_time_nsec (fixed32, the next field) */
    size_t n = fd_uint(out, tag, sec);
    if (out) {
        out[n] = (uint8_t)((((tag >> 3) + 1) << 3) | 5);
        out[n + 1] = nsec & 0xFF;
        out[n + 2] = (nsec >> 8) & 0xFF;
        out[n + 3] = (nsec >> 16) & 0xFF;
        out[n + 4] = (nsec >> 24) & 0xFF;
    }
    return n + 5;
}

static inline size_t fd_policy(uint8_t *out, const fd_tap_msg *m) {
    size_t n = 0;
    n += fd_bytes(out ? out + n : NULL, 0x0A, (const uint8_t *)"filterdns", 9); /* type */
    n += fd_bytes(out ? out + n : NULL, 0x12, m->rule, m->rulelen);             /* rule */
    n += fd_uint(out ? out + n : NULL, 0x18, (uint64_t)m->action);              /* action */
    n += fd_uint(out ? out + n : NULL, 0x20, 1);                         /* match: QNAME */
    n += fd_bytes(out ? out + n : NULL, 0x2A, m->value, m->valuelen);           /* value */
    return n;
}

static inline size_t fd_message(uint8_t *out, const fd_tap_msg *m) {
    size_t n = 0, plen;
    n += fd_uint(out ? out + n : NULL, 0x08, (uint64_t)m->type);
    n += fd_uint(out ? out + n : NULL, 0x10, (uint64_t)m->family);
    n += fd_uint(out ? out + n : NULL, 0x18, (uint64_t)m->protocol);
    if (m->addrlen) {
        n += fd_bytes(out ? out + n : NULL, m->peer ? 0x2A : 0x22, m->addr, m->addrlen);
        n += fd_uint(out ? out + n : NULL, m->peer ? 0x38 : 0x30, m->port);
    }
    n += fd_time(out ? out + n : NULL, 0x40, m->qsec, m->qnsec);
    if (m->query) n += fd_bytes(out ? out + n : NULL, 0x52, m->query, m->querylen);
    if (m->response) {
        n += fd_time(out ? out + n : NULL, 0x60, m->rsec, m->rnsec);
        n += fd_bytes(out ? out + n : NULL, 0x72, m->response, m->responselen);
        if (m->rule) {
            plen = fd_policy(NULL, m);
            if (out) out[n] = 0x7A;
            n += 1;
            n += fd_varint(out ? out + n : NULL, plen);
            if (out) fd_policy(out + n, m);
            n += plen;
        }
    }
    return n;
}

/* The whole frame for `m` after `prefix` (the encoded identity and version fields) into
 * `out` when it fits in `room`; returns its size, or 0 when it does not fit. */
static inline size_t fd_tap_frame(uint8_t *out, size_t room, const uint8_t *prefix,
                                  size_t prefixlen, const fd_tap_msg *m) {
    size_t mlen = fd_message(NULL, m);
    size_t body = prefixlen + 1 + fd_varint(NULL, mlen) + mlen + 2;
    size_t n = 4;
    if (4 + body > room) return 0;
    out[0] = (uint8_t)(body >> 24);
    out[1] = (uint8_t)(body >> 16);
    out[2] = (uint8_t)(body >> 8);
    out[3] = (uint8_t)body;
    memcpy(out + n, prefix, prefixlen);
    n += prefixlen;
    out[n++] = 0x72; /* Dnstap.message (14) */
    n += fd_varint(out + n, mlen);
    n += fd_message(out + n, m);
    out[n++] = 0x78; /* Dnstap.type (15) = MESSAGE */
    out[n++] = 0x01;
    return n;
}

#endif
