# cython: language_level=3
"""The stream loop: DNS over TCP (RFC 1035 4.2.2, RFC 7766) served from C.

An epoll set holds the listening sockets and every client connection; the event loop
watches its descriptor (`fileno`) and calls `serve` when it is readable. With the GIL
released, `serve` accepts connections, reads, cuts the 2-byte length frames and runs each
query through the same C pipeline as the UDP loop (`FastPath._one`: rate limit over the
TCP bucket, ACL, policy, cache, blocks), so cache hits and blocks are answered here; the
answers of one read go out with one send. What C does not answer is handed to Python
(`serve` returns it), which answers through `answer` or ends the connection through
`drop`; answers may so leave out of order (RFC 7766 6.2.1.1: clients match them by ID).

Limits: `max_conns` per listener (beyond, a new connection is accepted and closed at
once), `max_inflight` queries handed to Python per connection (beyond, the connection's
further frames wait), and `idle` seconds without a complete query (with none in flight)
before a connection is closed, so a client sending a byte a second is closed too. A
frame of length 0, or bytes that are not a query, close the connection once the answers
before them are sent, as the asyncio listener does. A close lingers (`_close`): our FIN,
then the client's bytes are read and dropped until it closes, for `LINGER` at most (not
after a deadline: `expire`).

DoT (RFC 7858) is the same loop inside TLS (`set_tls`, a loop of its own for the DoT
listeners): each connection gets a non-blocking OpenSSL `SSL` from `_tls.TlsContext`,
its handshake within `hs_timeout` (a failure is a clean close), then the same framing,
pipelining and limits through SSL_read / SSL_write. A connection whose server name
carries a ClientID has it mapped to a policy in C once (`FastPath.client_id_policy`), and
again only when the policies changed since (`FastPath.policy_gen`); its queries go
through the same pipeline under that policy, and those handed to Python carry the
ClientID. C answers are padded (RFC 8467) here, Python's by the caller.

DoH (`_doh.pyx`) is a subclass: it replaces the framing (`_frames`), the sending
(`_flush`, `_unsent`) and the hand-over items (`_item`), and hears of a client's end of
stream (`_eof`).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, memset, strlen

from dns_resolver.fast._blocks cimport BlockAnswers
from dns_resolver.fast._fastpath cimport (ANSWERED, T_TCP, T_TLS, TO_PYTHON, FastPath, Slot,
                                     host_port)
from dns_resolver.fast._querylog cimport L_BLOCKED
from dns_resolver.fast._tapbuf cimport TAP_DOT, TAP_TCP
from dns_resolver.fast._tls cimport (NAME_MAX, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE,
                               SSL_ERROR_ZERO_RETURN, SSL_do_handshake, SSL_free,
                               SSL_get_error, SSL_get_servername, SSL_has_pending, SSL_new,
                               SSL_read, SSL_session_reused, SSL_set_accept_state,
                               SSL_set_app_data, SSL_set_fd, SSL_shutdown, SSL_write,
                               ERR_clear_error, TLSEXT_NAMETYPE_host_name, TlsContext,
                               client_label, pad)
from dns_resolver.fast._wire cimport (mono_now, put16, sockaddr, sockaddr_storage, socklen_t, u16,
                                 wall_now)

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum: EPOLL_CLOEXEC
    enum: EPOLL_CTL_ADD
    enum: EPOLL_CTL_MOD
    enum: EPOLLIN
    enum: EPOLLOUT
    enum: EPOLLERR
    enum: EPOLLHUP

cdef extern from "<sys/socket.h>" nogil:
    int accept4(int fd, sockaddr *addr, socklen_t *len, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
    int shutdown(int fd, int how)
    enum: SHUT_WR
    enum: SOCK_NONBLOCK
    enum: SOCK_CLOEXEC
    enum: MSG_DONTWAIT
    enum: MSG_NOSIGNAL

cdef extern from "<netinet/in.h>" nogil:
    enum: IPPROTO_TCP

cdef extern from "<netinet/tcp.h>" nogil:
    enum: TCP_NODELAY

cdef extern from "<unistd.h>" nogil:
    int close(int fd)


cdef enum:
    MAX_EVENTS = 256       # epoll events per serve
    ACCEPTS = 64           # connections accepted per readable listener event
    CHUNK = 64             # frames answered between two sends
    IN_FIRST = 2048        # a connection's first receive buffer (grown to its frames)
    FRAME_MAX = 65537      # a length prefix and the longest message
    OUT_HIGH = 262144      # unsent answers beyond this: the connection's frames wait
    LISTENER = 0x40000000  # epoll data of a listener: this above its index
    GEN_MASK = 0x3FFFFFFF  # connection generations stay below LISTENER
    LINGER_READS = 4       # receives per event of a lingering connection (then others' turn)

cdef double LINGER = 2.0   # seconds a closed connection is read out for (see _close)

_NOTHING = ()


cdef inline uint64_t _tag(uint32_t gen, uint32_t slot) noexcept nogil:
    return (<uint64_t>gen << 32) | slot


cdef class StreamLoop:
    """TCP listeners answered by `fp`'s pipeline (see the module's docstring).

    Args:
        fp: the `FastPath` whose cache, block answers, ACL, policies, rate limiter, query
            log and dnstap buffers serve the TCP clients too.
        idle: `server.tcp_idle_timeout`.
        max_conns: `server.tcp_max_connections`, per listener.
        max_inflight: `server.tcp_max_inflight`, per connection.
    """

    def __cinit__(self, FastPath fp, double idle, uint32_t max_conns, uint32_t max_inflight):
        self.fileno = -1
        if max_conns < 1 or max_inflight < 1 or idle <= 0:
            raise ValueError("the TCP limits must be positive")
        self.fp = fp
        self.idle = idle
        self.max_conns = max_conns
        self.max_inflight = max_inflight
        self.tname = "tcp"
        self.transport = T_TCP
        self.tap_proto = TAP_TCP
        self.fileno = epoll_create1(EPOLL_CLOEXEC)
        if self.fileno < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.scratch = <uint8_t *>malloc(FRAME_MAX)
        self.capho = 64
        self.ho = <Handoff *>malloc(self.capho * sizeof(Handoff))
        if self.scratch == NULL or self.ho == NULL:
            raise MemoryError()

    def __dealloc__(self):
        self.close_all()
        free(self.scratch)
        free(self.ho)
        free(self.lfd)
        free(self.lconns)
        free(self.conns)
        free(self.free_slots)
        free(self.resume)

    def set_limits(self, double idle, uint32_t max_conns, uint32_t max_inflight):
        """New limits (a config reload): for new connections, and the idle time at once."""
        if max_conns < 1 or max_inflight < 1 or idle <= 0:
            raise ValueError("the TCP limits must be positive")
        self.idle = idle
        self.max_conns = max_conns
        self.max_inflight = max_inflight

    def set_tls(self, TlsContext tls, str server_name, double handshake_timeout,
                bint padding):
        """Speak TLS on every listener (DoT): new connections take `tls` (open ones keep
        theirs), ClientIDs are read below `server_name`, and C answers are padded when
        `padding`."""
        cdef bytes name = server_name.lower().rstrip(".").encode()
        if handshake_timeout <= 0:
            raise ValueError("the TLS handshake timeout must be positive")
        if len(name) >= NAME_MAX:
            raise ValueError(f"server name too long: {server_name}")
        self.tls = tls
        self.ctx = tls.ctx
        memcpy(self.names.ours, <char *>name, len(name) + 1)
        self.hs_timeout = handshake_timeout
        self.padding = padding
        self.tname = "tls"
        self.transport = T_TLS
        self.tap_proto = TAP_DOT

    @property
    def refused_names(self):
        """TLS handshakes refused for a server name we do not serve."""
        return self.names.refused

    def add_listener(self, int fd):
        """Serve the listening socket `fd` (non-blocking; Python keeps it open)."""
        cdef epoll_event ev
        cdef int li = self.nlisteners
        cdef int *lfd = <int *>realloc(self.lfd, (li + 1) * sizeof(int))
        cdef uint32_t *lconns
        if lfd == NULL:
            raise MemoryError()
        self.lfd = lfd
        lconns = <uint32_t *>realloc(self.lconns, (li + 1) * sizeof(uint32_t))
        if lconns == NULL:
            raise MemoryError()
        self.lconns = lconns
        self.lfd[li] = fd
        self.lconns[li] = 0
        ev.events = EPOLLIN
        ev.data.u64 = _tag(LISTENER, li)
        if epoll_ctl(self.fileno, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise OSError(errno, "epoll_ctl failed")
        self.nlisteners += 1

    @property
    def connections(self):
        """Open client connections (not those lingering after their close)."""
        return self.nslots - self.nfree - self.nlinger

    def close_all(self):
        """Close every client connection and the epoll set (the listeners are Python's)."""
        cdef uint32_t s
        for s in range(self.nslots):
            if self.conns[s].fd >= 0:
                self._close(s)
            if self.conns[s].linger_fd >= 0:
                self._release(s)
        if self.fileno >= 0:
            close(self.fileno)
            self.fileno = -1

    # -- from the event loop ----------------------------------------------------------------

    def serve(self):
        """Handle what is ready. Returns the queries for Python as [(connection id, query,
        host, port, reason, code, ClientID or None)] (`reason` indexes `_fastpath.REASONS`,
        `code` is the walk code of a new block); each gets `answer` or `drop` with its
        connection id."""
        cdef epoll_event evs[MAX_EVENTS]
        cdef int n, i
        cdef uint32_t s, k, gen, ev
        cdef uint64_t tag
        cdef double now
        cdef list rest
        cdef Handoff *h
        if self.fileno < 0:
            return _NOTHING
        with nogil:
            now = mono_now()
            # Connections whose held-back frames may go on now (an answer came back).
            k = self.nresume
            self.nresume = 0
            for i in range(<int>k):
                s = self.resume[i]
                self.conns[s].queued = False
                if self.conns[s].fd >= 0 and not self.conns[s].closing:
                    self._frames(s, now)
                    if (self.conns[s].ssl != NULL and self.conns[s].fd >= 0
                            and SSL_has_pending(self.conns[s].ssl)):
                        self._read_tls(s, now)  # decrypted bytes no socket event tells of
            n = epoll_wait(self.fileno, evs, MAX_EVENTS, 0)
            for i in range(n):
                tag = evs[i].data.u64
                gen = <uint32_t>(tag >> 32)
                s = <uint32_t>tag
                if gen == LISTENER:
                    self._accept(s, now)
                    continue
                if self.conns[s].gen != gen:
                    continue  # closed earlier in this round (its slot may be taken again)
                ev = evs[i].events
                if self.conns[s].linger_fd >= 0:
                    self._drain(s)  # its EOF or reset too: then released
                    continue
                if self.conns[s].fd < 0:
                    continue
                if ev & (EPOLLERR | EPOLLHUP):
                    if self.conns[s].hs:
                        self.handshakes_failed += 1
                    self._close(s)
                    continue
                if self.conns[s].hs:
                    self._handshake(s, now)
                    continue
                if self.conns[s].wantw and ev & EPOLLOUT:
                    self.conns[s].wantw = False  # TLS reading waited for this
                    ev |= EPOLLIN
                if ev & EPOLLOUT:
                    if not self._flush(s):
                        continue
                    self._frames(s, now)  # frames held back while the answers piled up
                    if self.conns[s].fd < 0 or self.conns[s].gen != gen:
                        continue
                if ev & EPOLLIN and not self.conns[s].closing:
                    self._read(s, now)
        if self.nho == 0:
            return _NOTHING
        rest = []
        for k in range(self.nho):
            h = &self.ho[k]
            rest.append(self._item(h))
            free(h.query)
        self.nho = 0
        return rest

    cdef object _item(self, Handoff *h):
        """What `serve` returns of handoff `h`."""
        host, port = host_port(h.name)
        return (h.cid, PyBytes_FromStringAndSize(<char *>h.query, h.len), host, port,
                h.reason, h.code, h.name_id.decode() if h.name_id[0] else None)

    def answer(self, uint64_t cid, bytes out):
        """Send Python's answer to a query of connection `cid` (gone: nothing happens;
        None: the query gets none). True when held-back frames of that connection can go
        on: call `serve` soon."""
        cdef uint32_t s = <uint32_t>cid
        cdef Conn *c
        cdef Py_ssize_t n = PyBytes_GET_SIZE(out) if out is not None else 0
        if s >= self.nslots or self.conns[s].fd < 0 or self.conns[s].gen != cid >> 32:
            return False
        c = &self.conns[s]
        c.inflight -= 1
        if out is not None and (n > 65535 or not self._append(
                c, <const uint8_t *>PyBytes_AS_STRING(out), <uint32_t>n)):
            self._close(s)
            return False
        if c.inflight == 0 and not c.closing:
            c.deadline = mono_now() + self.idle
        if not self._flush(s):
            return False
        if (not c.closing and not c.queued and c.inflight < self.max_inflight
                and (c.ssl != NULL and SSL_has_pending(c.ssl) or c.inlen - c.inpos >= 2
                     and c.inlen - c.inpos >= 2 + <uint32_t>u16(c.inb + c.inpos))):
            c.queued = True
            self.resume[self.nresume] = s
            self.nresume += 1
            return True
        return False

    def drop(self, uint64_t cid):
        """Python answers a query of `cid` with nothing (garbage): the connection closes
        once the answers before it are sent."""
        cdef uint32_t s = <uint32_t>cid
        if s >= self.nslots or self.conns[s].fd < 0 or self.conns[s].gen != cid >> 32:
            return
        self.conns[s].inflight -= 1
        self.conns[s].closing = True
        self.closed_garbage += 1
        self._flush(s)

    def expire(self):
        """Close the connections past their deadline: idle ones (no complete query for
        `idle` seconds, none in flight) and closing ones whose client does not read.
        Listeners paused for want of descriptors are watched again."""
        cdef uint32_t s
        cdef int li
        cdef double now = mono_now()
        cdef epoll_event ev
        if self.accept_paused:
            self.accept_paused = False
            for li in range(self.nlisteners):
                ev.events = EPOLLIN
                ev.data.u64 = _tag(LISTENER, li)
                epoll_ctl(self.fileno, EPOLL_CTL_MOD, self.lfd[li], &ev)
        for s in range(self.nslots):
            if self.conns[s].linger_fd >= 0 and now >= self.conns[s].deadline:
                self._release(s)
            elif (self.conns[s].fd >= 0 and now >= self.conns[s].deadline
                    and (self.conns[s].inflight == 0 or self.conns[s].closing)):
                if self.conns[s].hs:
                    self.handshake_timeouts += 1
                else:
                    self.closed_idle += 1
                self._close(s)
                if self.conns[s].linger_fd >= 0:
                    # No lingering: a client that sent nothing whole for so long (or
                    # reads nothing) has nothing a reset could spoil, and one still
                    # trickling bytes should see its writes fail.
                    self._release(s)

    # -- connections ------------------------------------------------------------------------

    cdef void _accept(self, int li, double now) noexcept nogil:
        cdef sockaddr_storage name
        cdef socklen_t namelen
        cdef int fd, i, one = 1
        cdef uint32_t s
        cdef Conn *c
        cdef epoll_event ev
        for i in range(ACCEPTS):
            namelen = sizeof(name)
            fd = accept4(self.lfd[li], <sockaddr *>&name, &namelen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    # Out of descriptors: the listener would stay readable and spin the
                    # loop; it is watched again at the next expire().
                    ev.events = 0
                    ev.data.u64 = _tag(LISTENER, li)
                    epoll_ctl(self.fileno, EPOLL_CTL_MOD, self.lfd[li], &ev)
                    self.accept_paused = True
                return
            if self.lconns[li] >= self.max_conns or (self.nfree == 0 and not self._grow()):
                close(fd)  # a clean close rather than a wait in the backlog
                self.refused += 1
                continue
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            self.nfree -= 1
            s = self.free_slots[self.nfree]
            c = &self.conns[s]
            c.fd = fd
            c.listener = li
            c.inflight = 0
            c.closing = False
            c.queued = False
            c.deadline = now + self.idle
            c.ssl = NULL
            c.hs = False
            c.wantw = False
            c.cid[0] = 0
            c.idpol = -1
            c.http = NULL
            if self.ctx != NULL:
                c.ssl = SSL_new(self.ctx)
                if c.ssl == NULL or SSL_set_fd(c.ssl, fd) != 1:
                    SSL_free(c.ssl)
                    c.ssl = NULL
                    close(fd)
                    self.refused += 1
                    continue
                SSL_set_accept_state(c.ssl)
                SSL_set_app_data(c.ssl, &self.names)  # for the server name callback
                c.hs = True
                c.deadline = now + self.hs_timeout
            c.inb = NULL
            c.inpos = c.inlen = c.incap = 0
            c.outb = NULL
            c.outpos = c.outlen = c.outcap = 0
            memcpy(c.name, &name, sizeof(c.name))
            c.events = EPOLLIN
            ev.events = EPOLLIN
            ev.data.u64 = _tag(c.gen, s)
            if epoll_ctl(self.fileno, EPOLL_CTL_ADD, fd, &ev) < 0:
                c.fd = -1
                SSL_free(c.ssl)
                c.ssl = NULL
                close(fd)
                self.free_slots[self.nfree] = s
                self.nfree += 1
                continue
            self.lconns[li] += 1
            self.accepted += 1

    cdef bint _grow(self) noexcept nogil:
        """Twice the connection slots (the table holds no pointers between calls)."""
        cdef uint32_t more = self.nslots if self.nslots else 64, i
        cdef Conn *conns = <Conn *>realloc(self.conns, (self.nslots + more) * sizeof(Conn))
        cdef uint32_t *free_slots
        cdef uint32_t *resume
        if conns == NULL:
            return False
        self.conns = conns
        free_slots = <uint32_t *>realloc(self.free_slots, (self.nslots + more) * sizeof(uint32_t))
        if free_slots == NULL:
            return False
        self.free_slots = free_slots
        resume = <uint32_t *>realloc(self.resume, (self.nslots + more) * sizeof(uint32_t))
        if resume == NULL:
            return False
        self.resume = resume
        memset(conns + self.nslots, 0, more * sizeof(Conn))
        for i in range(more):
            conns[self.nslots + i].fd = -1
            conns[self.nslots + i].linger_fd = -1
            self.free_slots[self.nfree] = self.nslots + more - 1 - i  # lowest taken first
            self.nfree += 1
        self.nslots += more
        return True

    cdef void _close(self, uint32_t s) noexcept nogil:
        """End connection `s`: its TLS close_notify, our FIN, then a lingering close."""
        cdef Conn *c = &self.conns[s]
        cdef epoll_event ev
        if c.ssl != NULL:
            if not c.hs:
                # close_notify (RFC 8446 6.1), so the client can tell our end (idle, a
                # limit, garbage, shutdown, its own close_notify) from a cut connection.
                # One non-blocking try: a socket that takes no more bytes gets the bare
                # close, and after a fatal error OpenSSL sends nothing.
                SSL_shutdown(c.ssl)
            SSL_free(c.ssl)
            c.ssl = NULL
            ERR_clear_error()
        c.gen = (c.gen + 1) & GEN_MASK  # Python's late answers to it are dropped
        free(c.inb)
        free(c.outb)
        c.inb = NULL
        c.outb = NULL
        self.lconns[c.listener] -= 1
        # A lingering close (RFC 9112 9.6, RFC 9113 5.4.1): our FIN goes after what we
        # sent, then the client's bytes are read and dropped until it closes too (or
        # LINGER passes). Closed with its bytes unread, the socket would be reset by the
        # kernel, and a reset destroys what the client had not read yet (our GOAWAY, a
        # 4xx, the close_notify) and fails its writes in flight.
        c.linger_fd = c.fd
        c.fd = -1
        c.deadline = mono_now() + LINGER
        ev.events = EPOLLIN
        ev.data.u64 = _tag(c.gen, s)
        c.events = EPOLLIN
        self.nlinger += 1
        if (shutdown(c.linger_fd, SHUT_WR) < 0
                or epoll_ctl(self.fileno, EPOLL_CTL_MOD, c.linger_fd, &ev) < 0):
            self._release(s)  # reset by the client already (or epoll is gone: shutdown)

    cdef void _release(self, uint32_t s) noexcept nogil:
        """Close lingering connection `s` for good: its slot is free."""
        cdef Conn *c = &self.conns[s]
        close(c.linger_fd)  # which takes it out of the epoll set
        c.linger_fd = -1
        c.gen = (c.gen + 1) & GEN_MASK
        self.nlinger -= 1
        self.free_slots[self.nfree] = s
        self.nfree += 1

    cdef void _drain(self, uint32_t s) noexcept nogil:
        """Read and drop what lingering connection `s` sent; released at its EOF."""
        cdef ssize_t r
        cdef int i
        for i in range(LINGER_READS):
            r = recv(self.conns[s].linger_fd, self.scratch, FRAME_MAX, MSG_DONTWAIT)
            if r > 0:
                continue
            if r < 0 and (errno == EAGAIN or errno == EINTR):
                return
            self._release(s)  # the client closed (or reset) its side
            return

    cdef void _arm(self, uint32_t s) noexcept nogil:
        """Read while frames may be taken, write while answers wait."""
        cdef Conn *c = &self.conns[s]
        cdef epoll_event ev
        cdef uint32_t want = 0
        cdef size_t unsent = self._unsent(s)
        if c.hs or c.wantw:
            want = EPOLLOUT if c.wantw else EPOLLIN
        elif not c.closing and c.inflight < self.max_inflight and unsent < OUT_HIGH:
            want = EPOLLIN
        if unsent and not c.hs:
            want |= EPOLLOUT
        if want != c.events:
            ev.events = want
            ev.data.u64 = _tag(c.gen, s)
            epoll_ctl(self.fileno, EPOLL_CTL_MOD, c.fd, &ev)
            c.events = want

    cdef bint _read(self, uint32_t s, double now) noexcept nogil:
        """One receive and the frames it completes. False when the connection closed."""
        cdef Conn *c = &self.conns[s]
        cdef ssize_t r
        if c.ssl != NULL:
            return self._read_tls(s, now)
        if not _make_room(self, s):
            return False
        if c.inlen == c.incap:
            return True  # full of frames held back: read on once they are taken
        r = recv(c.fd, c.inb + c.inlen, c.incap - c.inlen, MSG_DONTWAIT)
        if r == 0:
            c.closing = True  # the client is done sending: answer what it sent, then close
        elif r < 0:
            if errno == EAGAIN or errno == EINTR:
                return True
            self._close(s)
            return False
        else:
            c.inlen += r
            self._frames(s, now)
            return self.conns[s].fd >= 0
        return self._flush(s)

    cdef bint _read_tls(self, uint32_t s, double now) noexcept nogil:
        """Decrypt what the socket holds, answering the frames it completes, until TLS
        wants more bytes or the connection takes no more frames. False when closed."""
        cdef Conn *c = &self.conns[s]
        cdef int r, err
        while not c.closing:
            if not _make_room(self, s):
                return False
            if c.inlen == c.incap:
                return True  # full of frames held back: `answer` resumes them
            ERR_clear_error()
            r = SSL_read(c.ssl, c.inb + c.inlen, <int>(c.incap - c.inlen))
            if r <= 0:
                err = SSL_get_error(c.ssl, r)
                if err == SSL_ERROR_WANT_READ:
                    return True
                if err == SSL_ERROR_WANT_WRITE:
                    c.wantw = True
                    self._arm(s)
                    return True
                if err != SSL_ERROR_ZERO_RETURN:
                    self._close(s)  # a broken record or a reset: nothing more can be read
                    return False
                c.closing = True  # the client is done sending: answer, then close
                self._eof(s)
                return self._flush(s)
            c.inlen += r
            self._frames(s, now)
            if self.conns[s].fd < 0:
                return False
        return True

    cdef bint _handshake(self, uint32_t s, double now) noexcept nogil:
        """Go on with the TLS handshake; once done, read. False when closed or not done."""
        cdef Conn *c = &self.conns[s]
        cdef int r, err
        ERR_clear_error()
        c.wantw = False
        r = SSL_do_handshake(c.ssl)
        if r != 1:
            err = SSL_get_error(c.ssl, r)
            if err == SSL_ERROR_WANT_READ or err == SSL_ERROR_WANT_WRITE:
                c.wantw = err == SSL_ERROR_WANT_WRITE
                self._arm(s)
                return False
            self.handshakes_failed += 1  # plain DNS, random bytes, a name not served...
            self._close(s)
            return False
        c.hs = False
        c.deadline = now + self.idle
        if SSL_session_reused(c.ssl):
            self.handshakes_resumed += 1
        else:
            self.handshakes_full += 1
        client_label(SSL_get_servername(c.ssl, TLSEXT_NAMETYPE_host_name), self.names.ours,
                     c.cid)
        if c.cid[0]:
            c.idpol = self.fp.client_id_policy(c.cid, <uint32_t>strlen(c.cid), c.name)
            c.idgen = self.fp.policy_gen
        self._arm(s)
        return self._read_tls(s, now)

    cdef void _frames(self, uint32_t s, double now) noexcept nogil:
        """Answer the complete frames received (up to the in-flight limit), send."""
        cdef Conn *c = &self.conns[s]
        cdef Slot slots[CHUNK]
        cdef uint32_t qoff[CHUNK]
        cdef uint32_t qlen[CHUNK]
        cdef size_t ooff[CHUNK]
        cdef uint32_t k, i, avail, flen
        cdef const uint8_t *q
        cdef Slot *sl
        cdef double lat, wall
        if c.cid[0] and c.idgen != self.fp.policy_gen:
            # The policies changed (a reload): the ClientID may name another policy now.
            c.idpol = self.fp.client_id_policy(c.cid, <uint32_t>strlen(c.cid), c.name)
            c.idgen = self.fp.policy_gen
        while True:
            if c.outpos:
                # Offsets into outb are kept below: it only grows until the send.
                memmove(c.outb, c.outb + c.outpos, c.outlen - c.outpos)
                c.outlen -= c.outpos
                c.outpos = 0
            k = 0
            while (k < CHUNK and not c.closing and c.inflight < self.max_inflight
                   and c.outlen < OUT_HIGH):
                avail = c.inlen - c.inpos
                if avail < 2:
                    break
                flen = u16(c.inb + c.inpos)
                if flen == 0:
                    c.closing = True  # no message is empty: the framing is lost
                    self.closed_garbage += 1
                    break
                if avail < 2 + flen:
                    break
                q = c.inb + c.inpos + 2
                c.deadline = now + self.idle
                sl = &slots[k]
                self.fp._one(q, flen, c.name, self.scratch, sl, now, self.transport, c.idpol)
                if sl.verdict == ANSWERED:
                    if self.padding:
                        sl.outlen = pad(self.scratch, sl.outlen, 65535)
                    if not self._append(c, self.scratch, sl.outlen):
                        self._close(s)
                        return
                    qoff[k] = c.inpos + 2
                    qlen[k] = flen
                    ooff[k] = c.outlen - sl.outlen
                    k += 1
                elif sl.verdict == TO_PYTHON:
                    if not self._hand(s, q, flen, sl.reason, sl.code):
                        self._close(s)
                        return
                    c.inflight += 1
                    self.fp.python_fallbacks += 1
                else:
                    c.closing = True  # garbage or a response: Python closes on these too
                    self.closed_garbage += 1
                c.inpos += 2 + flen
            if k:
                self.fp.fast_answers += k
                lat = mono_now() - now
                self.fp._count_latency(k, lat)
                if self.fp.log.on or self.fp.tap.on:
                    wall = wall_now()
                    for i in range(k):
                        sl = &slots[i]
                        if self.fp.log.on and sl.result >= 0:
                            self.fp.log.write(c.name, c.inb + qoff[i], qlen[i], sl.qtype, sl.result,
                                         sl.metric, lat, wall, self.tname)
                        if self.fp.tap.on:
                            self.fp._tap(c.name, self.tap_proto, c.inb + qoff[i], qlen[i],
                                         c.outb + ooff[i], u16(c.outb + ooff[i] - 2), <int>sl.code
                                         if sl.result == L_BLOCKED else -1, wall - lat, wall)
            if not self._flush(s):
                return
            if k < CHUNK:
                return

    cdef bint _flush(self, uint32_t s) noexcept nogil:
        """Send what waits; close a closing connection once all is out. False when the
        connection closed."""
        cdef Conn *c = &self.conns[s]
        cdef ssize_t r
        cdef int w, err
        if c.hs:
            return True
        while c.ssl != NULL and c.outpos < c.outlen:
            ERR_clear_error()
            w = SSL_write(c.ssl, c.outb + c.outpos, <int>min(c.outlen - c.outpos, 1 << 30))
            if w <= 0:
                err = SSL_get_error(c.ssl, w)
                if err == SSL_ERROR_WANT_WRITE or err == SSL_ERROR_WANT_READ:
                    break
                self._close(s)
                return False
            c.outpos += w
        while c.outpos < c.outlen:
            r = send(c.fd, c.outb + c.outpos, c.outlen - c.outpos, MSG_DONTWAIT | MSG_NOSIGNAL)
            if r < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    break
                self._close(s)
                return False
            c.outpos += r
        if c.outpos == c.outlen:
            c.outpos = c.outlen = 0
            if c.closing and c.inflight == 0:
                self._close(s)
                return False
        self._arm(s)
        return True

    cdef bint _append(self, Conn *c, const uint8_t *d, uint32_t n) noexcept nogil:
        """Frame `d` onto the connection's unsent answers. False when out of memory."""
        cdef size_t need = c.outlen + 2 + n
        if not out_room(c, need):
            return False
        put16(c.outb + c.outlen, n)
        memcpy(c.outb + c.outlen + 2, d, n)
        c.outlen = need
        return True

    cdef bint _hand(self, uint32_t s, const uint8_t *q, uint32_t n, int reason,
                    int64_t code) noexcept nogil:
        """Queue query `q` of connection `s` for Python. False when out of memory."""
        cdef Handoff *h
        cdef Handoff *grown
        if self.nho == self.capho:
            grown = <Handoff *>realloc(self.ho, 2 * self.capho * sizeof(Handoff))
            if grown == NULL:
                return False
            self.ho = grown
            self.capho *= 2
        h = &self.ho[self.nho]
        h.query = <uint8_t *>malloc(n if n else 1)
        if h.query == NULL:
            return False
        memcpy(h.query, q, n)
        h.len = n
        h.cid = _tag(self.conns[s].gen, s)
        memcpy(h.name, self.conns[s].name, sizeof(h.name))
        h.reason = reason
        h.code = code
        memcpy(h.name_id, self.conns[s].cid, sizeof(h.name_id))
        h.stream = 0
        h.head = NULL
        self.nho += 1
        return True

    cdef size_t _unsent(self, uint32_t s) noexcept nogil:
        """Bytes of connection `s` waiting for the socket."""
        return self.conns[s].outlen - self.conns[s].outpos

    cdef void _eof(self, uint32_t s) noexcept nogil:
        """The TLS client of `s` is done sending (DoH tells Python's HTTP/1.1)."""
        pass


cdef inline bint _make_room(StreamLoop loop, uint32_t s) noexcept nogil:
    """Move connection `s`'s unread bytes to the front of its input buffer and grow the
    buffer to hold the frame they start (at least IN_FIRST). False when it could not grow:
    the connection is closed."""
    cdef Conn *c = &loop.conns[s]
    cdef uint32_t need = IN_FIRST
    cdef uint8_t *grown
    if c.inpos:
        memmove(c.inb, c.inb + c.inpos, c.inlen - c.inpos)
        c.inlen -= c.inpos
        c.inpos = 0
    if c.inlen >= 2 and 2 + <uint32_t>u16(c.inb) > need:
        need = 2 + u16(c.inb)
    if need > c.incap:
        grown = <uint8_t *>realloc(c.inb, need)
        if grown == NULL:
            loop._close(s)
            return False
        c.inb = grown
        c.incap = need
    return True
