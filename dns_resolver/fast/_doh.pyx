# cython: language_level=3
"""DoH (RFC 8484) served from the stream loop: `DohLoop` is `StreamLoop` inside TLS with
HTTP/2 framed by libnghttp2, its callbacks in C.

After the TLS handshake, a connection whose ALPN is `h2` gets an nghttp2 server session:
our SETTINGS (`max_streams` as SETTINGS_MAX_CONCURRENT_STREAMS), then every decrypted read
goes through `nghttp2_session_mem_recv`, whose callbacks gather each request (method, path,
Content-Type, Content-Length, body). Once a request is whole, the DNS query it carries
(`GET /dns-query?dns=` in base64url, or a `POST /dns-query` body of
`application/dns-message`; `/dns-query/ID` gives the ClientID `ID`, mapped to its policy
per request by `FastPath.client_id_policy`) runs through `FastPath._one` as the other
stream transports' do, and C answers what it can: `200`, `application/dns-message`,
`Cache-Control: max-age=` the smallest TTL, padded when asked. A query C cannot answer goes to Python with its connection
and stream (`serve`), and comes back through `respond`, which C frames. So does every
request C does not handle itself: an error (400, 404, 405, 413, 415, told by Python's
`DohService`), a path or `dns` parameter in an unusual spelling (%-escapes).

nghttp2 enforces the protocol: a broken preface or a frame out of place is a connection
error (GOAWAY, counted in `http_errors`), a stream over SETTINGS_MAX_CONCURRENT_STREAMS is
reset with REFUSED_STREAM (counted in `refused_streams`) while the others go on. Any other
end of an HTTP/2 connection (idle, shutdown, the client's close) sends a GOAWAY with
NO_ERROR; then comes TLS close_notify, then `StreamLoop`'s lingering close.

A connection without ALPN `h2` speaks HTTP/1.1, rare for DoH: C relays its decrypted bytes
to Python (`serve` items of reason `RELAY`, then one of `RELAY_END` when the client is
gone), which runs its h11 session over them and writes through `relay`, ending with
`finish`. Python keeps that connection's idle time.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, strlen, strncmp

from dns_resolver.fast._fastpath cimport ANSWERED, T_HTTPS, TO_PYTHON, FastPath, Slot, host_port
from dns_resolver.fast._querylog cimport L_BLOCKED
from dns_resolver.fast._stream cimport Conn, Handoff, StreamLoop, out_room
from dns_resolver.fast._tapbuf cimport TAP_DOH
from dns_resolver.fast._tls cimport (LABEL_MAX, SSL, SSL_get0_alpn_selected, SSL_has_pending,
                                     SSL_write,
                                     TlsContext, pad)
from dns_resolver.fast._wire cimport TYPE_OPT, mono_now, skip_name, u16, wall_now

cdef extern from "<openssl/bio.h>" nogil:
    ctypedef struct BIO:
        pass
    ctypedef struct BIO_METHOD:
        pass
    const BIO_METHOD *BIO_s_mem()
    BIO *BIO_new(const BIO_METHOD *kind)
    int BIO_read(BIO *b, void *data, int dlen)
    long BIO_get_mem_data(BIO *b, char **pp)
    size_t BIO_ctrl_pending(BIO *b)

cdef extern from "<openssl/ssl.h>" nogil:
    void SSL_set0_wbio(SSL *s, BIO *wbio)
    int SSL_shutdown(SSL *s)
    void SSL_set_read_ahead(SSL *s, int yes)

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    enum: MSG_DONTWAIT
    enum: MSG_NOSIGNAL

cdef extern from "<nghttp2/nghttp2.h>" nogil:
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass
    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags
    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
    ctypedef struct nghttp2_headers:
        nghttp2_headers_category cat
    ctypedef struct nghttp2_rst_stream:
        uint32_t error_code
    ctypedef struct nghttp2_goaway:
        uint32_t error_code
    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_rst_stream rst_stream
        nghttp2_goaway goaway
    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags
    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value
    ctypedef union nghttp2_data_source:
        int fd
        void *ptr
    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback
    ctypedef int (*frame_cb)(nghttp2_session *session, const nghttp2_frame *frame,
                             void *user_data)
    ctypedef int (*header_cb)(nghttp2_session *session, const nghttp2_frame *frame,
                              const uint8_t *name, size_t namelen, const uint8_t *value,
                              size_t valuelen, uint8_t flags, void *user_data)
    ctypedef int (*data_cb)(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *user_data)
    ctypedef int (*close_cb)(nghttp2_session *session, int32_t stream_id,
                             uint32_t error_code, void *user_data)
    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *cbs, frame_cb cb)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks *cbs, header_cb cb)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *cbs, data_cb cb)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *cbs, frame_cb cb)
    void nghttp2_session_callbacks_set_on_frame_send_callback(
        nghttp2_session_callbacks *cbs, frame_cb cb)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *cbs, close_cb cb)
    int nghttp2_option_new(nghttp2_option **option)
    void nghttp2_option_set_no_closed_streams(nghttp2_option *option, int val)
    int nghttp2_session_server_new2(nghttp2_session **session,
                                    const nghttp2_session_callbacks *callbacks,
                                    void *user_data, const nghttp2_option *option)
    void nghttp2_session_del(nghttp2_session *session)
    int nghttp2_submit_settings(nghttp2_session *session, uint8_t flags,
                                const nghttp2_settings_entry *iv, size_t niv)
    ssize_t nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *inp,
                                     size_t inlen)
    ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr)
    int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id,
                                const nghttp2_nv *nva, size_t nvlen,
                                const nghttp2_data_provider *data_prd)
    void *nghttp2_session_get_stream_user_data(nghttp2_session *session, int32_t stream_id)
    int nghttp2_session_set_stream_user_data(nghttp2_session *session, int32_t stream_id,
                                             void *data)
    int nghttp2_session_terminate_session(nghttp2_session *session, uint32_t error_code)
    int nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                                  uint32_t error_code)
    int nghttp2_session_want_read(nghttp2_session *session)
    int nghttp2_session_want_write(nghttp2_session *session)
    enum:
        NGHTTP2_DATA
        NGHTTP2_HEADERS
        NGHTTP2_RST_STREAM
        NGHTTP2_GOAWAY
        NGHTTP2_SETTINGS
        NGHTTP2_FLAG_ACK
        NGHTTP2_FLAG_NONE
        NGHTTP2_FLAG_END_STREAM
        NGHTTP2_NV_FLAG_NONE
        NGHTTP2_DATA_FLAG_EOF
        NGHTTP2_REFUSED_STREAM
        NGHTTP2_NO_ERROR
        NGHTTP2_PROTOCOL_ERROR
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        NGHTTP2_ERR_CALLBACK_FAILURE


cdef enum:
    MAX_BODY = 65535       # the longest DNS message (a longer body: 413)
    MAX_HEADERS = 16384    # SETTINGS_MAX_HEADER_LIST_SIZE, and the longest path kept
    QUERY_MAX = 65537      # a decoded `dns` parameter (base64url of up to MAX_BODY bytes)
    UNLIMITED = 0x7FFFFFFF  # SETTINGS_MAX_CONCURRENT_STREAMS as nghttp2 knows it
    M_OTHER = 0
    M_GET = 1
    M_POST = 2
    # A handoff's reason beyond _fastpath.REASONS:
    HAND_REQUEST = 0x20000     # a request for Python's DohService (its head in `head`)
    HAND_RELAY = 0x20001       # HTTP/1.1 bytes for Python's h11 session
    HAND_RELAY_END = 0x20002   # that connection is gone

cdef double NEVER = 1e300  # a deadline that does not pass

REQUEST = HAND_REQUEST
RELAY = HAND_RELAY
RELAY_END = HAND_RELAY_END

cdef const char *CONTENT_TYPE = b"application/dns-message"


cdef struct Counts:
    # Per loop, reached from each session's user data.
    unsigned long long http_errors       # GOAWAYs naming an error (a bad preface, broken
                                         # framing), RST_STREAMs of PROTOCOL_ERROR
    unsigned long long refused_streams   # streams over max_streams, reset


cdef struct Req:
    # One HTTP/2 request (a stream's user data), freed when nghttp2 closes the stream.
    int32_t stream
    int method             # M_GET, M_POST, M_OTHER
    bint done              # answered or handed over: further DATA is ignored
    bint queued            # on the connection's ready list
    bint too_long          # a header beyond what is kept: Python refuses it
    uint32_t clen          # Content-Length (0: none), capped above MAX_BODY
    char mtext[16]         # the method as sent (cut short)
    char ctype[128]        # the Content-Type as sent (cut short)
    char *path
    uint32_t pathlen
    uint8_t *body
    uint32_t blen, bcap
    uint8_t *resp          # the response body, read by nghttp2
    uint32_t rlen, rpos
    Req *prev              # the connection's requests (freed with it)
    Req *next


cdef struct Http:
    # A DoH connection's state (Conn.http).
    nghttp2_session *session   # NULL: HTTP/1.1, relayed to Python
    BIO *wbio                  # TLS records not sent yet (owned by the SSL)
    Counts *counts
    Req *live
    uint32_t nlive             # requests open (on streams nghttp2 has not closed)
    uint32_t max_streams       # beyond, a new stream is refused
    int32_t *ready             # streams whose request is whole, in order
    uint32_t nready, capready
    bint goaway                # HTTP/2: our GOAWAY went out (the session ends)
    bint told_end              # HTTP/1.1: Python knows the connection is gone
    bint finished              # HTTP/1.1: Python's session ended


# -- nghttp2 callbacks (nogil, C only: they gather; DohLoop._frames acts) --------------------

cdef void _free_req(Http *h, Req *r) noexcept nogil:
    h.nlive -= 1
    if r.prev != NULL:
        r.prev.next = r.next
    else:
        h.live = r.next
    if r.next != NULL:
        r.next.prev = r.prev
    free(r.path)
    free(r.body)
    free(r.resp)
    free(r)


cdef void _ready(Http *h, Req *r) noexcept nogil:
    cdef int32_t *grown
    if r.queued or r.done:
        return
    if h.nready == h.capready:
        grown = <int32_t *>realloc(h.ready, (h.capready * 2 + 16) * sizeof(int32_t))
        if grown == NULL:
            return  # out of memory: the stream gets no answer (the client times it out)
        h.ready = grown
        h.capready = h.capready * 2 + 16
    r.queued = True
    h.ready[h.nready] = r.stream
    h.nready += 1


cdef int _on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                           void *ud) noexcept nogil:
    cdef Http *h = <Http *>ud
    cdef Req *r
    if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    if h.nlive >= h.max_streams:
        # A stream error, the connection's others go on (RFC 9113 5.1.2). nghttp2 would
        # make it a connection error once the client acknowledged our limit: it is told
        # none (see _pump), and the limit is kept here.
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame.hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM)
        return 0
    r = <Req *>calloc(1, sizeof(Req))
    if r == NULL:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE  # the stream is reset
    r.stream = frame.hd.stream_id
    h.nlive += 1
    r.next = h.live
    if h.live != NULL:
        h.live.prev = r
    h.live = r
    nghttp2_session_set_stream_user_data(session, r.stream, r)
    return 0


cdef inline bint _is(const uint8_t *a, size_t n, const char *b) noexcept nogil:
    return n == strlen(b) and memcmp(a, b, n) == 0


cdef int _on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *ud) noexcept nogil:
    cdef Req *r = <Req *>nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
    cdef size_t i, n
    if r == NULL or frame.hd.type != NGHTTP2_HEADERS:
        return 0
    if _is(name, namelen, ":method"):
        r.method = (M_GET if _is(value, valuelen, "GET")
                    else M_POST if _is(value, valuelen, "POST") else M_OTHER)
        n = min(valuelen, sizeof(r.mtext) - 1)
        memcpy(r.mtext, value, n)
        r.mtext[n] = 0
    elif _is(name, namelen, ":path"):
        if valuelen > MAX_HEADERS:
            r.too_long = True
            return 0
        free(r.path)
        r.path = <char *>malloc(valuelen + 1)
        if r.path == NULL:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        memcpy(r.path, value, valuelen)
        r.path[valuelen] = 0
        r.pathlen = <uint32_t>valuelen
    elif _is(name, namelen, "content-type"):
        n = min(valuelen, sizeof(r.ctype) - 1)
        memcpy(r.ctype, value, n)
        r.ctype[n] = 0
    elif _is(name, namelen, "content-length"):
        r.clen = 0
        for i in range(valuelen):
            if not b'0' <= value[i] <= b'9':
                r.clen = 0  # as Python reads a bad one: no declared size
                break
            if r.clen <= MAX_BODY:
                r.clen = r.clen * 10 + (value[i] - c'0')
    return 0


cdef int _on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                  const uint8_t *data, size_t n, void *ud) noexcept nogil:
    cdef Req *r = <Req *>nghttp2_session_get_stream_user_data(session, stream_id)
    cdef size_t need, cap
    cdef uint8_t *grown
    if r == NULL or r.done or r.queued:
        return 0
    if r.blen + n > MAX_BODY:
        r.blen = MAX_BODY + 1  # the size Python refuses (413); the rest is not kept
        _ready(<Http *>ud, r)
        return 0
    need = r.blen + n
    if need > r.bcap:
        cap = max(need, <size_t>(r.clen if r.clen > 0 else 512))
        grown = <uint8_t *>realloc(r.body, cap)
        if grown == NULL:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        r.body = grown
        r.bcap = <uint32_t>cap
    memcpy(r.body + r.blen, data, n)
    r.blen += <uint32_t>n
    return 0


cdef int _on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                        void *ud) noexcept nogil:
    cdef Req *r
    if frame.hd.type != NGHTTP2_HEADERS and frame.hd.type != NGHTTP2_DATA:
        return 0
    r = <Req *>nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
    if r == NULL:
        return 0
    if frame.hd.flags & NGHTTP2_FLAG_END_STREAM or r.clen > MAX_BODY:
        _ready(<Http *>ud, r)  # whole, or refused (413) before its body
    return 0


cdef int _on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                        void *ud) noexcept nogil:
    cdef Http *h = <Http *>ud
    if frame.hd.type == NGHTTP2_RST_STREAM:
        if frame.rst_stream.error_code == NGHTTP2_REFUSED_STREAM:
            h.counts.refused_streams += 1
        elif frame.rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR:
            # A malformed request (RFC 9113 8.1.1: a stream error), which h2 makes a
            # connection error in asyncio: counted the same.
            h.counts.http_errors += 1
    elif frame.hd.type == NGHTTP2_GOAWAY:
        h.goaway = True
        # Every connection error nghttp2 finds (most without an error from mem_recv)
        # and ours on a bad preface end here, as h2's ProtocolError does in asyncio.
        if frame.goaway.error_code != NGHTTP2_NO_ERROR:
            h.counts.http_errors += 1
    return 0


cdef int _on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                   void *ud) noexcept nogil:
    cdef Req *r = <Req *>nghttp2_session_get_stream_user_data(session, stream_id)
    if r != NULL:
        nghttp2_session_set_stream_user_data(session, stream_id, NULL)
        _free_req(<Http *>ud, r)
    return 0


cdef ssize_t _read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                        size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                        void *ud) noexcept nogil:
    cdef Req *r = <Req *>source.ptr
    cdef size_t n = min(length, <size_t>(r.rlen - r.rpos))
    memcpy(buf, r.resp + r.rpos, n)
    r.rpos += <uint32_t>n
    if r.rpos == r.rlen:
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
    return <ssize_t>n


cdef nghttp2_session_callbacks *CALLBACKS = NULL
cdef nghttp2_option *OPTIONS = NULL


cdef nghttp2_session_callbacks *_callbacks() noexcept nogil:
    if CALLBACKS == NULL and nghttp2_session_callbacks_new(&CALLBACKS) == 0:
        nghttp2_session_callbacks_set_on_begin_headers_callback(CALLBACKS, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(CALLBACKS, _on_header)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(CALLBACKS, _on_data)
        nghttp2_session_callbacks_set_on_frame_recv_callback(CALLBACKS, _on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_send_callback(CALLBACKS, _on_frame_send)
        nghttp2_session_callbacks_set_on_stream_close_callback(CALLBACKS, _on_close)
    if OPTIONS == NULL and nghttp2_option_new(&OPTIONS) == 0:
        # nghttp2 keeps closed streams (for priorities) up to the concurrency limit it
        # knows, which is none here (see _advertise): keep none.
        nghttp2_option_set_no_closed_streams(OPTIONS, 1)
    return CALLBACKS if OPTIONS != NULL else NULL


# -- the pieces of a DoH answer ---------------------------------------------------------------

cdef uint32_t min_ttl(const uint8_t *m, uint32_t n) noexcept nogil:
    """The smallest TTL of message `m`'s records, OPT aside; 0 without records (as
    `listen_https.min_ttl`)."""
    cdef uint32_t pos = 12, i, records, ttl, best = 0
    cdef bint seen = False
    if n < 12:
        return 0
    for i in range(u16(m + 4)):
        pos = skip_name(m, n, pos)
        if pos == 0 or pos + 4 > n:
            return 0
        pos += 4
    records = <uint32_t>u16(m + 6) + u16(m + 8) + u16(m + 10)
    for i in range(records):
        pos = skip_name(m, n, pos)
        if pos == 0 or pos + 10 > n:
            return 0
        if u16(m + pos) != TYPE_OPT:
            ttl = (<uint32_t>m[pos + 4] << 24) | (<uint32_t>m[pos + 5] << 16) \
                | (<uint32_t>m[pos + 6] << 8) | m[pos + 7]
            best = min(best, ttl) if seen else ttl
            seen = True
        pos += 10 + u16(m + pos + 8)
        if pos > n:
            return 0
    return best if seen else 0


cdef inline int _b64(uint8_t ch) noexcept nogil:
    if b'A' <= ch <= b'Z':
        return ch - c'A'
    if b'a' <= ch <= b'z':
        return ch - c'a' + 26
    if b'0' <= ch <= b'9':
        return ch - c'0' + 52
    if ch == b'-':
        return 62
    if ch == b'_':
        return 63
    return -1


cdef uint32_t b64url(const char *s, uint32_t n, uint8_t *out, uint32_t cap) noexcept nogil:
    """The bytes of base64url `s` (padding allowed) in `out`: their count, 0 when `s` is
    not plainly base64url (Python tells the client why)."""
    cdef uint32_t i, k = 0, acc = 0, bits = 0
    cdef int v
    while n and s[n - 1] == b'=':
        n -= 1
    if n == 0 or n % 4 == 1 or n / 4 * 3 + 2 > cap:
        return 0
    for i in range(n):
        v = _b64(s[i])
        if v < 0:
            return 0
        acc = (acc << 6) | <uint32_t>v
        bits += 6
        if bits >= 8:
            bits -= 8
            out[k] = <uint8_t>(acc >> bits)
            k += 1
    return k


cdef int64_t client_id(const char *path, uint32_t n, char *cid) noexcept nogil:
    """The ClientID segment of `path` after `/dns-query` (lower case, in `cid`; "" for
    none), and where the path ends (its `?`, or `n`); -1 when C leaves the spelling to
    Python (%-escapes, more segments, an empty one, more than a label)."""
    cdef uint32_t i = 11, k = 0
    cid[0] = 0
    if n <= 10 or path[10] != b'/':
        return 10
    while i < n and path[i] != b'?':
        if path[i] == b'/' or path[i] == b'%' or path[i] >= 0x80 or k + 1 >= LABEL_MAX:
            return -1
        cid[k] = path[i] + 32 if b'A' <= path[i] <= b'Z' else path[i]
        k += 1
        i += 1
    if k == 0:
        return -1
    cid[k] = 0
    return i


cdef uint32_t dns_query(Req *r, uint8_t *buf, const uint8_t **q, char *cid) noexcept nogil:
    """The DNS query of request `r` (in `q`, decoded into `buf` for a GET) and its length,
    with the path's ClientID in `cid`; 0 when C leaves the request to Python: an error, an
    unusual spelling."""
    cdef const char *p
    cdef const char *v
    cdef uint32_t vlen
    cdef int64_t end
    cid[0] = 0
    if r.too_long or r.path == NULL or r.pathlen < 10 or memcmp(r.path, b"/dns-query", 10):
        return 0
    end = client_id(r.path, r.pathlen, cid)
    if end < 0:
        return 0
    if r.method == M_POST:
        if end != r.pathlen or r.blen == 0 or r.blen > MAX_BODY:
            return 0
        if memcmp(r.ctype, CONTENT_TYPE, strlen(CONTENT_TYPE) + 1):
            return 0
        q[0] = r.body
        return r.blen
    if r.method != M_GET or end + 5 > r.pathlen or r.path[end] != b'?':
        return 0
    p = r.path + end + 1
    while True:  # the `dns` parameter, spelt plainly (no %-escapes: Python reads those)
        if strncmp(p, b"dns=", 4) == 0:  # not memcmp: the path may end within 4 bytes
            v = p + 4
            vlen = 0
            while v[vlen] and v[vlen] != b'&':
                vlen += 1
            q[0] = buf
            return b64url(v, vlen, buf, QUERY_MAX)
        while p[0] and p[0] != b'&':
            p += 1
        if not p[0]:
            return 0
        p += 1


cdef void _advertise(uint8_t *frame, size_t n, uint32_t max_streams) noexcept nogil:
    """Our SETTINGS frame `frame` (as nghttp2 wrote it) with `max_streams` for the
    UNLIMITED that nghttp2 was given as SETTINGS_MAX_CONCURRENT_STREAMS: the client is told
    the limit, and nghttp2, which would make a stream beyond it a connection error, never
    sees it (the begin-headers callback refuses such streams one by one)."""
    cdef size_t i
    if frame[4] & NGHTTP2_FLAG_ACK:
        return
    for i in range(9, n - 5, 6):  # entries: a 16-bit id, a 32-bit value
        if u16(frame + i) == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS \
                and (<uint32_t>u16(frame + i + 2) << 16 | u16(frame + i + 4)) == UNLIMITED:
            frame[i + 2] = <uint8_t>(max_streams >> 24)
            frame[i + 3] = <uint8_t>(max_streams >> 16)
            frame[i + 4] = <uint8_t>(max_streams >> 8)
            frame[i + 5] = <uint8_t>max_streams


cdef bint _put(Conn *c, const uint8_t *d, size_t n) noexcept nogil:
    """Add `d` to the connection's unsent bytes. False when out of memory."""
    cdef size_t need = c.outlen + n
    if not out_room(c, need):
        return False
    memcpy(c.outb + c.outlen, d, n)
    c.outlen = need
    return True


cdef inline nghttp2_nv _nv(const char *name, const char *value, size_t vlen) noexcept nogil:
    cdef nghttp2_nv nv
    nv.name = <uint8_t *>name
    nv.namelen = strlen(name)
    nv.value = <uint8_t *>value
    nv.valuelen = vlen
    nv.flags = NGHTTP2_NV_FLAG_NONE
    return nv


cdef class DohLoop(StreamLoop):
    """DoH listeners answered by `fp`'s pipeline (see the module's docstring); the
    arguments are `StreamLoop`'s (`set_max_streams` sets `tls.max_streams`)."""

    cdef uint32_t max_streams
    cdef Counts counts
    cdef uint8_t *qbuf             # a GET's decoded query

    def __cinit__(self, FastPath fp, double idle, uint32_t max_conns, uint32_t max_inflight):
        self.qbuf = <uint8_t *>malloc(QUERY_MAX)
        if self.qbuf == NULL or _callbacks() == NULL:
            raise MemoryError()
        self.max_streams = 100  # tls.max_streams' default

    def __dealloc__(self):
        free(self.qbuf)

    def set_tls(self, TlsContext tls, str server_name, double handshake_timeout,
                bint padding):
        """`StreamLoop.set_tls`, counted as DoH (`tls` must be an `https` context)."""
        StreamLoop.set_tls(self, tls, server_name, handshake_timeout, padding)
        self.tname = "https"
        self.transport = T_HTTPS
        self.tap_proto = TAP_DOH

    def set_max_streams(self, uint32_t max_streams):
        """SETTINGS_MAX_CONCURRENT_STREAMS of new connections."""
        if max_streams < 1:
            raise ValueError("tls.max_streams must be positive")
        self.max_streams = max_streams

    @property
    def http_errors(self):
        """HTTP/2 protocol errors: connections closed for one (a bad preface, broken frames),
        streams reset for one (a malformed request)."""
        return self.counts.http_errors

    @property
    def refused_streams(self):
        """HTTP/2 streams reset with REFUSED_STREAM (over max_streams)."""
        return self.counts.refused_streams

    # -- from Python ----------------------------------------------------------------------------

    def respond(self, unsigned long long cid, int32_t stream, int status, bytes body,
                headers):
        """Send Python's response to stream `stream` of connection `cid` (`headers`:
        [(name, value)] as bytes, lower case; content-length is added). Gone: nothing
        happens. True when the connection's held-back bytes can go on: call `serve` soon."""
        cdef uint32_t s = <uint32_t>cid
        cdef Conn *c
        cdef Http *h
        cdef nghttp2_nv nva[16]
        cdef size_t nvlen = 0
        cdef char st[8]
        cdef char clen[16]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
        if s >= self.nslots or self.conns[s].fd < 0 or self.conns[s].gen != cid >> 32:
            return False
        c = &self.conns[s]
        h = <Http *>c.http
        c.inflight -= 1
        if c.inflight == 0 and not c.closing:
            c.deadline = mono_now() + self.idle
        snprintf(st, sizeof(st), "%d", status)
        nva[0] = _nv(":status", st, strlen(st))
        nvlen = 1
        for name, value in headers[:14]:
            nva[nvlen] = _nv(<const char *>name, <const char *>value, len(value))
            nvlen += 1
        snprintf(clen, sizeof(clen), "%zd", n)
        nva[nvlen] = _nv("content-length", clen, strlen(clen))
        nvlen += 1
        if h == NULL or h.session == NULL:
            return False
        self._submit(h, stream, nva, nvlen, <const uint8_t *>PyBytes_AS_STRING(body), <uint32_t>n)
        if not self._pump(s):
            return False
        if (not c.closing and not c.queued and c.inflight < self.max_inflight
                and SSL_has_pending(c.ssl)):
            c.queued = True
            self.resume[self.nresume] = s
            self.nresume += 1
            return True
        return False

    def relay(self, unsigned long long cid, bytes data):
        """Send Python's HTTP/1.1 bytes on connection `cid` (gone: nothing happens)."""
        cdef uint32_t s = <uint32_t>cid
        if s >= self.nslots or self.conns[s].fd < 0 or self.conns[s].gen != cid >> 32:
            return
        if not _put(&self.conns[s], <const uint8_t *>PyBytes_AS_STRING(data),
                    <size_t>PyBytes_GET_SIZE(data)):
            self._close(s)
            return
        self._flush(s)

    def finish(self, unsigned long long cid):
        """Python's HTTP/1.1 session of `cid` ended: close once what it sent is out."""
        cdef uint32_t s = <uint32_t>cid
        if s >= self.nslots or self.conns[s].fd < 0 or self.conns[s].gen != cid >> 32:
            return
        (<Http *>self.conns[s].http).finished = True
        self.conns[s].closing = True
        self.conns[s].deadline = mono_now() + self.idle  # for a client that does not read
        self._flush(s)

    # -- the loop's hooks -------------------------------------------------------------------------

    cdef object _item(self, Handoff *h):
        """(connection id, stream, data, host, port, reason, code, head, ClientID):
        `head` is (method, path, content type) for a REQUEST, whose `code` is its declared
        size; the ClientID (or None) is the path's, for a query."""
        host, port = host_port(h.name)
        head = None
        if h.head != NULL:
            method = h.head.decode("latin-1")
            path = (h.head + strlen(h.head) + 1).decode("latin-1")
            ctype = (h.head + strlen(h.head) + 1 + len(path) + 1).decode("latin-1")
            head = (method, path, ctype or None)
            free(h.head)
        return (h.cid, h.stream, PyBytes_FromStringAndSize(<char *>h.query, h.len), host, port,
                h.reason, h.code, head, h.name_id.decode() if h.name_id[0] and head is None
                else None)

    cdef void _close(self, uint32_t s) noexcept nogil:
        """`StreamLoop._close` after our last words: an HTTP/2 GOAWAY (NO_ERROR when none
        went out yet: idle, shutdown, the client's close) and the TLS close_notify, which
        the memory BIO holds until sent here (one try: the socket takes them or not)."""
        cdef Conn *c = &self.conns[s]
        cdef Http *h = <Http *>c.http
        cdef const uint8_t *data
        cdef ssize_t n
        cdef char *p
        cdef long pending
        if h != NULL:
            if h.session == NULL:
                if not h.told_end:
                    self._tell_end(s)
            else:
                if not h.goaway:
                    nghttp2_session_terminate_session(h.session, NGHTTP2_NO_ERROR)
                while True:
                    n = nghttp2_session_mem_send(h.session, &data)
                    if n <= 0 or SSL_write(c.ssl, data, <int>n) <= 0:
                        break
                nghttp2_session_del(h.session)
                while h.live != NULL:
                    _free_req(h, h.live)
            if h.wbio != NULL:
                SSL_shutdown(c.ssl)
                pending = BIO_get_mem_data(h.wbio, &p)
                if pending > 0:
                    send(c.fd, p, <size_t>pending, MSG_DONTWAIT | MSG_NOSIGNAL)
            free(h.ready)
            free(h)
            c.http = NULL
        StreamLoop._close(self, s)

    cdef void _eof(self, uint32_t s) noexcept nogil:
        cdef Http *h = <Http *>self.conns[s].http
        if h != NULL and h.session == NULL and not h.told_end:
            self._tell_end(s)

    cdef void _tell_end(self, uint32_t s) noexcept nogil:
        cdef uint8_t nothing = 0
        (<Http *>self.conns[s].http).told_end = True
        self._hand(s, &nothing, 1, HAND_RELAY_END, 0)

    cdef void _frames(self, uint32_t s, double now) noexcept nogil:
        """What the client sent: HTTP/2 through nghttp2 and the requests it completes,
        or HTTP/1.1 bytes for Python."""
        cdef Conn *c = &self.conns[s]
        cdef Http *h = <Http *>c.http
        cdef ssize_t r
        if c.inpos == c.inlen and h == NULL:
            return
        if h == NULL:
            h = self._start(s)
            if h == NULL:
                self._close(s)
                return
        if h.session == NULL:
            if c.inlen > c.inpos:
                if not self._hand(s, c.inb + c.inpos, c.inlen - c.inpos, HAND_RELAY, 0):
                    self._close(s)
                    return
                c.inpos = c.inlen
            return
        if c.inlen > c.inpos:
            r = nghttp2_session_mem_recv(h.session, c.inb + c.inpos, c.inlen - c.inpos)
            c.inpos = c.inlen
            if r < 0:
                # A bad preface (or a flood): counted with its GOAWAY (_on_frame_send).
                nghttp2_session_terminate_session(h.session, NGHTTP2_PROTOCOL_ERROR)
                c.closing = True
        self._requests(s, now)
        if c.fd >= 0:
            self._pump(s)

    cdef Http *_start(self, uint32_t s) noexcept nogil:
        """The HTTP state of connection `s` at its first bytes: an nghttp2 session (our
        SETTINGS queued) when its ALPN is h2, else HTTP/1.1 relayed to Python."""
        cdef Conn *c = &self.conns[s]
        cdef Http *h = <Http *>calloc(1, sizeof(Http))
        cdef const unsigned char *alpn = NULL
        cdef unsigned int alen = 0
        cdef nghttp2_settings_entry iv[2]
        if h == NULL:
            return NULL
        h.counts = &self.counts
        c.http = h
        # TLS writes go to memory and leave in one send per round: one record per answer
        # (see _pump) would otherwise be one system call each.
        h.wbio = BIO_new(BIO_s_mem())
        if h.wbio == NULL:
            return NULL
        SSL_set0_wbio(c.ssl, h.wbio)
        # And reads take what the socket holds, not a record header and then its body:
        # two system calls per record otherwise (DoH clients send a record per request).
        SSL_set_read_ahead(c.ssl, 1)
        SSL_get0_alpn_selected(c.ssl, &alpn, &alen)
        if alen != 2 or memcmp(alpn, b"h2", 2):
            c.deadline = NEVER  # Python's session keeps the idle time (then `finish`)
            return h
        if nghttp2_session_server_new2(&h.session, CALLBACKS, h, OPTIONS) != 0:
            h.session = NULL
            return NULL  # freed by _close
        h.max_streams = self.max_streams
        iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[0].value = UNLIMITED  # for nghttp2; the client reads max_streams (see _pump)
        iv[1].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        iv[1].value = MAX_HEADERS
        if nghttp2_submit_settings(h.session, NGHTTP2_FLAG_NONE, iv, 2) != 0:
            return NULL
        return h

    cdef bint _pump(self, uint32_t s) noexcept nogil:
        """What nghttp2 has to send, out through TLS, one record per answer (a record ends
        after each stream's last DATA frame): dnsperf takes at most one answer from each
        record it reads. False when the connection closed."""
        cdef Conn *c = &self.conns[s]
        cdef Http *h = <Http *>c.http
        cdef const uint8_t *data
        cdef ssize_t n
        cdef size_t pos = c.outlen, sealed = c.outlen, flen
        while True:
            n = nghttp2_session_mem_send(h.session, &data)
            if n < 0:
                self._close(s)
                return False
            if n == 0:
                break
            if not _put(c, data, <size_t>n):
                self._close(s)
                return False
            while pos + 9 <= c.outlen:  # nghttp2's frame headers: 24-bit length, type, flags
                flen = 9 + ((<size_t>c.outb[pos] << 16) | (<size_t>c.outb[pos + 1] << 8)
                            | c.outb[pos + 2])
                if pos + flen > c.outlen:
                    break
                pos += flen
                if c.outb[pos - flen + 3] == NGHTTP2_SETTINGS:
                    _advertise(c.outb + pos - flen, flen, h.max_streams)
                if c.outb[pos - flen + 3] == NGHTTP2_DATA \
                        and c.outb[pos - flen + 4] & NGHTTP2_FLAG_END_STREAM:
                    if not self._seal(s, c.outb + sealed, pos - sealed):
                        return False
                    sealed = pos
        if c.outlen > sealed and not self._seal(s, c.outb + sealed, c.outlen - sealed):
            return False
        c.outpos = c.outlen = 0
        if not nghttp2_session_want_read(h.session) and not nghttp2_session_want_write(h.session):
            c.closing = True  # after a GOAWAY: closed once flushed
        return self._flush(s)

    cdef bint _seal(self, uint32_t s, const uint8_t *d, size_t n) noexcept nogil:
        """Encrypt `d` into the connection's unsent records. False when it closed."""
        cdef int w
        while n:
            w = SSL_write(self.conns[s].ssl, d, <int>min(n, <size_t>(1 << 30)))
            if w <= 0:
                self._close(s)  # memory never blocks: TLS itself failed
                return False
            d += w
            n -= <size_t>w
        return True

    cdef size_t _unsent(self, uint32_t s) noexcept nogil:
        cdef Http *h = <Http *>self.conns[s].http
        if h == NULL or h.wbio == NULL:
            return StreamLoop._unsent(self, s)
        return BIO_ctrl_pending(h.wbio) + self.conns[s].outlen - self.conns[s].outpos

    cdef bint _flush(self, uint32_t s) noexcept nogil:
        """Encrypt what waits (HTTP/1.1 bytes from `relay`), send the records; close a
        closing connection once all is out. False when the connection closed."""
        cdef Conn *c = &self.conns[s]
        cdef Http *h = <Http *>c.http
        cdef char *p
        cdef long n
        cdef ssize_t r
        if c.hs or h == NULL or h.wbio == NULL:
            return StreamLoop._flush(self, s)
        if c.outlen > c.outpos:
            if not self._seal(s, c.outb + c.outpos, c.outlen - c.outpos):
                return False
            c.outpos = c.outlen = 0
        while True:
            n = BIO_get_mem_data(h.wbio, &p)
            if n <= 0:
                break
            r = send(c.fd, p, <size_t>n, MSG_DONTWAIT | MSG_NOSIGNAL)
            if r < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    break
                self._close(s)
                return False
            while r > 0:  # what went out leaves the BIO (qbuf: a sink here)
                r -= BIO_read(h.wbio, self.qbuf, <int>min(r, <ssize_t>QUERY_MAX))
        if (BIO_ctrl_pending(h.wbio) == 0 and c.closing and c.inflight == 0
                and (h.session != NULL or h.finished)):
            self._close(s)
            return False
        self._arm(s)
        return True

    cdef void _submit(self, Http *h, int32_t stream, const nghttp2_nv *nva, size_t nvlen,
                      const uint8_t *body, uint32_t n) noexcept nogil:
        """Queue the response of `stream` (gone: nothing happens)."""
        cdef nghttp2_data_provider prd
        cdef Req *r
        if h == NULL or h.session == NULL:
            return
        r = <Req *>nghttp2_session_get_stream_user_data(h.session, stream)
        if r == NULL:
            return  # reset meanwhile
        free(r.resp)
        r.resp = <uint8_t *>malloc(n if n else 1)
        if r.resp == NULL:
            return
        memcpy(r.resp, body, n)
        r.rlen = n
        r.rpos = 0
        prd.source.ptr = r
        prd.read_callback = _read_body
        nghttp2_submit_response(h.session, stream, nva, nvlen, &prd if n else NULL)

    cdef bint _hand_request(self, uint32_t s, Req *r) noexcept nogil:
        """Hand request `r` to Python's DohService. False when out of memory."""
        cdef size_t lm = strlen(r.mtext), lc = strlen(r.ctype)
        cdef size_t lp = r.pathlen if r.path != NULL and not r.too_long else 0
        cdef char *head = <char *>malloc(lm + lp + lc + 3)
        cdef Handoff *ho
        if head == NULL:
            return False
        memcpy(head, r.mtext, lm + 1)
        if lp:
            memcpy(head + lm + 1, r.path, lp)
        head[lm + 1 + lp] = 0
        memcpy(head + lm + lp + 2, r.ctype, lc + 1)
        if not self._hand(s, r.body if r.body != NULL else <uint8_t *>head,
                          min(r.blen, <uint32_t>MAX_BODY) if r.body != NULL else 0,
                          HAND_REQUEST, max(r.clen, r.blen)):
            free(head)
            return False
        ho = &self.ho[self.nho - 1]
        ho.stream = r.stream
        ho.head = head
        return True

    cdef void _requests(self, uint32_t s, double now) noexcept nogil:
        """Answer the whole requests, or hand them to Python."""
        cdef Conn *c = &self.conns[s]
        cdef Http *h = <Http *>c.http
        cdef uint32_t i, n, ttl
        cdef Req *r
        cdef const uint8_t *q
        cdef Slot sl
        cdef nghttp2_nv nva[4]
        cdef char cache[32]
        cdef char clen[16]
        cdef double lat, wall
        cdef char cid[LABEL_MAX]
        cdef int idpol
        for i in range(h.nready):
            r = <Req *>nghttp2_session_get_stream_user_data(h.session, h.ready[i])
            if r == NULL or r.done:
                continue
            r.done = True
            c.deadline = now + self.idle
            n = dns_query(r, self.qbuf, &q, cid)
            if n == 0:
                if not self._hand_request(s, r):
                    self._close(s)
                    return
                c.inflight += 1
                continue
            # The path's ClientID, per request (the server name's is not DoH's).
            idpol = self.fp.client_id_policy(cid, <uint32_t>strlen(cid), c.name) if cid[0] else -1
            self.fp._one(q, n, c.name, self.scratch, &sl, now, self.transport, idpol)
            if sl.verdict == TO_PYTHON:
                if not self._hand(s, q, n, sl.reason, sl.code):
                    self._close(s)
                    return
                self.ho[self.nho - 1].stream = r.stream
                memcpy(self.ho[self.nho - 1].name_id, cid, LABEL_MAX)
                c.inflight += 1
                self.fp.python_fallbacks += 1
                continue
            if sl.verdict != ANSWERED:
                if not self._hand_request(s, r):  # not a query: Python says 400
                    self._close(s)
                    return
                c.inflight += 1
                continue
            if self.padding:
                sl.outlen = pad(self.scratch, sl.outlen, 65535)
            ttl = min_ttl(self.scratch, sl.outlen)
            snprintf(cache, sizeof(cache), "max-age=%u", ttl)
            snprintf(clen, sizeof(clen), "%u", sl.outlen)
            nva[0] = _nv(":status", "200", 3)
            nva[1] = _nv("content-type", CONTENT_TYPE, strlen(CONTENT_TYPE))
            nva[2] = _nv("cache-control", cache, strlen(cache))
            nva[3] = _nv("content-length", clen, strlen(clen))
            self._submit(h, r.stream, nva, 4, self.scratch, sl.outlen)
            self.fp.fast_answers += 1
            lat = mono_now() - now
            self.fp._count_latency(1, lat)
            if self.fp.log.on or self.fp.tap.on:
                wall = wall_now()
                if self.fp.log.on and sl.result >= 0:
                    self.fp.log.write(c.name, q, n, sl.qtype, sl.result, sl.metric, lat, wall,
                                      self.tname)
                if self.fp.tap.on:
                    self.fp._tap(c.name, self.tap_proto, q, n, self.scratch, sl.outlen,
                                 <int>sl.code if sl.result == L_BLOCKED else -1, wall - lat,
                                 wall)
        h.nready = 0


def ttl_of(bytes message) -> int:
    """`min_ttl` as C computes it for DoH's Cache-Control (for tests)."""
    return min_ttl(<const uint8_t *>PyBytes_AS_STRING(message), <uint32_t>len(message))


def decoded(str value) -> bytes | None:
    """The `dns` parameter as C decodes it (None: left to Python), for tests."""
    cdef bytes raw = value.encode()
    cdef uint8_t out[QUERY_MAX]
    cdef uint32_t n = b64url(raw, <uint32_t>len(raw), out, QUERY_MAX)
    return PyBytes_FromStringAndSize(<char *>out, n) if n else None
