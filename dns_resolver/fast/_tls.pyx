# cython: language_level=3
"""DoT's and DoH's TLS in C (OpenSSL), for the stream loop (`_stream.pyx`, `_doh.pyx`): the
server context built from the same PEM files as `certs.ServerTls`, ALPN `dot`, or `h2` then
`http/1.1` for DoH (a client that offers none is served too), the ClientID of the TLS server name (as `certs.client_id_of`: a name we do
not serve is refused with an `unrecognized_name` alert), and the EDNS padding of answers
(RFC 7830, the 468-byte block of RFC 8467, as `edns.pad`).

Session tickets are on and keyed per context (OpenSSL's default): a new `TlsContext` per
ticket rotation is a new ticket key, and open connections keep the context they began
with (each SSL holds a reference to it).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcmp, memcpy, memset, strcmp, strlen

from dns_resolver.fast._wire cimport TYPE_OPT, put16, skip_name, u16

cdef enum:
    PADDING_BLOCK = 468    # RFC 8467 4.1: the server's block length
    OPTION_PADDING = 12    # RFC 7830


cdef int _alpn(SSL *s, const unsigned char **out, unsigned char *outlen,
               const unsigned char *inp, unsigned int inlen, void *arg) noexcept nogil:
    """`dot` when the client offers it; else no ALPN (the handshake goes on)."""
    cdef unsigned int i = 0
    while i < inlen:
        if inp[i] == 3 and i + 4 <= inlen and inp[i + 1] == b'd' and inp[i + 2] == b'o' \
                and inp[i + 3] == b't':
            out[0] = inp + i + 1
            outlen[0] = 3
            return SSL_TLSEXT_ERR_OK
        i += 1 + inp[i]
    return SSL_TLSEXT_ERR_NOACK


cdef int _alpn_https(SSL *s, const unsigned char **out, unsigned char *outlen,
                     const unsigned char *inp, unsigned int inlen, void *arg) noexcept nogil:
    """`h2` when the client offers it, else `http/1.1`; else no ALPN (HTTP/1.1 is spoken)."""
    cdef unsigned int i = 0
    cdef const unsigned char *h1 = NULL
    while i < inlen and i + 1 + inp[i] <= inlen:
        if inp[i] == 2 and memcmp(inp + i + 1, b"h2", 2) == 0:
            out[0] = inp + i + 1
            outlen[0] = 2
            return SSL_TLSEXT_ERR_OK
        if inp[i] == 8 and memcmp(inp + i + 1, b"http/1.1", 8) == 0:
            h1 = inp + i + 1
        i += 1 + inp[i]
    if h1 == NULL:
        return SSL_TLSEXT_ERR_NOACK
    out[0] = h1
    outlen[0] = 8
    return SSL_TLSEXT_ERR_OK


cdef int _server_name(SSL *s, int *al, void *arg) noexcept nogil:
    cdef TlsNames *names = <TlsNames *>SSL_get_app_data(s)
    cdef char label[LABEL_MAX]
    if names == NULL or client_label(SSL_get_servername(s, TLSEXT_NAMETYPE_host_name),
                                     names.ours, label):
        return SSL_TLSEXT_ERR_OK
    names.refused += 1
    al[0] = SSL_AD_UNRECOGNIZED_NAME
    return SSL_TLSEXT_ERR_ALERT_FATAL


cdef bint client_label(const char *name, const char *ours, char *label) noexcept nogil:
    """Whether the server name `name` is served under `ours`, with the ClientID in
    `label` ("" for none): no name or no `ours`, or `ours` itself, is accepted without a
    ClientID; one label below `ours` is that label; anything else is refused."""
    cdef char low[NAME_MAX]
    cdef size_t n, i, dot
    label[0] = 0
    if name == NULL or name[0] == 0 or ours[0] == 0:
        return True
    n = strlen(name)
    if n >= NAME_MAX:
        return False
    for i in range(n):
        low[i] = name[i] + 32 if b'A' <= name[i] <= b'Z' else name[i]
    if low[n - 1] == b'.':
        n -= 1
    low[n] = 0
    if strcmp(low, ours) == 0:
        return True
    dot = 0
    while dot < n and low[dot] != b'.':
        dot += 1
    if dot == 0 or dot >= n or dot >= LABEL_MAX or strcmp(low + dot + 1, ours) != 0:
        return False
    memcpy(label, low, dot)
    label[dot] = 0
    return True


cdef uint32_t pad(uint8_t *m, uint32_t n, uint32_t cap) noexcept nogil:
    """The length of answer `m` once padded in place to a multiple of the block (room for
    `cap` bytes); `n` when it is not padded: no OPT last (the query had no EDNS), or it
    does not fit."""
    cdef uint32_t pos = 12, i, records, last = 0, fill, total
    if n < 12:
        return n
    for i in range(u16(m + 4)):
        pos = skip_name(m, n, pos)
        if pos == 0 or pos + 4 > n:
            return n
        pos += 4
    records = <uint32_t>u16(m + 6) + u16(m + 8) + u16(m + 10)
    if records == 0:
        return n
    for i in range(records):
        last = pos
        pos = skip_name(m, n, pos)
        if pos == 0 or pos + 10 > n:
            return n
        pos += 10 + u16(m + pos + 8)
        if pos > n:
            return n
    if pos != n or m[last] != 0 or u16(m + last + 1) != TYPE_OPT:
        return n
    fill = (PADDING_BLOCK - (n + 4) % PADDING_BLOCK) % PADDING_BLOCK
    total = n + 4 + fill
    if total > cap or <uint32_t>u16(m + last + 9) + 4 + fill > 0xFFFF:
        return n
    put16(m + last + 9, u16(m + last + 9) + 4 + fill)
    put16(m + n, OPTION_PADDING)
    put16(m + n + 2, <uint16_t>fill)
    memset(m + n + 4, 0, fill)
    return total


cdef class TlsContext:
    """An OpenSSL server context from PEM files (`cert` holds the chain; `key` may be the
    same file), with DoH's ALPN when `https` (else DoT's). Raises ValueError naming the
    files when they cannot be loaded."""

    def __cinit__(self, str cert, str key, bint https=False):
        cdef bytes bcert = cert.encode()
        cdef bytes bkey = key.encode()
        cdef char err[256]
        self.ctx = SSL_CTX_new(TLS_server_method())
        if self.ctx == NULL:
            raise MemoryError()
        SSL_CTX_set_min_proto_version(self.ctx, TLS1_2_VERSION)
        ERR_clear_error()
        if (SSL_CTX_use_certificate_chain_file(self.ctx, bcert) != 1
                or SSL_CTX_use_PrivateKey_file(self.ctx, bkey, SSL_FILETYPE_PEM) != 1
                or SSL_CTX_check_private_key(self.ctx) != 1):
            ERR_error_string_n(ERR_get_error(), err, sizeof(err))
            ERR_clear_error()
            raise ValueError(f"{cert} / {key}: not a usable PEM certificate and key "
                             f"({err.decode(errors='replace')})")
        # Tickets resume sessions without a server-side cache, which would only grow.
        SSL_CTX_set_session_cache_mode(self.ctx, SSL_SESS_CACHE_OFF)
        # The loop's answer buffer moves as it grows, and a write may go out in parts.
        SSL_CTX_set_mode(self.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                         | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS)
        # A client that ends its TCP stream without close_notify still gets the answers
        # to what it sent (as plain TCP's EOF). TLS 1.2 renegotiation would make a write
        # wait for a read, and costs us a handshake at the client's will: refused.
        SSL_CTX_set_options(self.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION)
        SSL_CTX_set_alpn_select_cb(self.ctx, _alpn_https if https else _alpn, NULL)
        SSL_CTX_set_tlsext_servername_callback(self.ctx, _server_name)

    def __dealloc__(self):
        SSL_CTX_free(self.ctx)  # connections still using it hold their own reference


def client_id(name: str | None, ours: str) -> tuple[bool, str | None]:
    """`certs.client_id_of` as C computes it (for tests)."""
    cdef char label[LABEL_MAX]
    cdef bytes bname = name.encode() if name else b""
    cdef bytes bours = ours.encode()
    if not client_label(bname, bours, label):
        return False, None
    return True, (label.decode() or None)


def padded(bytes message) -> bytes:
    """`message` padded as C pads DoT answers (for tests)."""
    cdef uint32_t n = <uint32_t>len(message)
    cdef bytearray buf = bytearray(message) + bytearray(PADDING_BLOCK + 4)
    cdef uint8_t *p = <uint8_t *>(<char *>buf)
    return bytes(buf[:pad(p, n, <uint32_t>len(buf))])
