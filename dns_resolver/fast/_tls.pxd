# What C sees of DoT's TLS (dns_resolver/fast/_tls.pyx): OpenSSL, the server context, padding.
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "<openssl/ssl.h>" nogil:
    ctypedef struct SSL_CTX:
        pass
    ctypedef struct SSL:
        pass
    ctypedef struct SSL_METHOD:
        pass
    const SSL_METHOD *TLS_server_method()
    SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth)
    void SSL_CTX_free(SSL_CTX *ctx)
    int SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version)
    int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file)
    int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int kind)
    int SSL_CTX_check_private_key(const SSL_CTX *ctx)
    long SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode)
    long SSL_CTX_set_mode(SSL_CTX *ctx, long mode)
    uint64_t SSL_CTX_set_options(SSL_CTX *ctx, uint64_t op)
    ctypedef int (*alpn_cb)(SSL *s, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *inp, unsigned int inlen, void *arg)
    void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx, alpn_cb cb, void *arg)
    ctypedef int (*name_cb)(SSL *s, int *al, void *arg)
    long SSL_CTX_set_tlsext_servername_callback(SSL_CTX *ctx, name_cb cb)
    const char *SSL_get_servername(const SSL *s, int kind)
    SSL *SSL_new(SSL_CTX *ctx)
    void SSL_free(SSL *s)
    int SSL_set_fd(SSL *s, int fd)
    void SSL_set_accept_state(SSL *s)
    int SSL_set_app_data(SSL *s, void *arg)
    void *SSL_get_app_data(const SSL *s)
    int SSL_do_handshake(SSL *s)
    int SSL_read(SSL *s, void *buf, int num)
    int SSL_write(SSL *s, const void *buf, int num)
    int SSL_pending(const SSL *s)
    int SSL_has_pending(const SSL *s)
    int SSL_get_error(const SSL *s, int ret)
    int SSL_session_reused(const SSL *s)
    void SSL_get0_alpn_selected(const SSL *s, const unsigned char **data, unsigned int *len)
    int SSL_shutdown(SSL *s)
    enum: TLS1_2_VERSION
    enum: SSL_FILETYPE_PEM
    enum: SSL_OP_IGNORE_UNEXPECTED_EOF
    enum: SSL_OP_NO_RENEGOTIATION
    enum: SSL_SESS_CACHE_OFF
    enum: SSL_MODE_ENABLE_PARTIAL_WRITE
    enum: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
    enum: SSL_MODE_RELEASE_BUFFERS
    enum: SSL_TLSEXT_ERR_OK
    enum: SSL_TLSEXT_ERR_NOACK
    enum: SSL_TLSEXT_ERR_ALERT_FATAL
    enum: SSL_AD_UNRECOGNIZED_NAME
    enum: TLSEXT_NAMETYPE_host_name
    enum: SSL_ERROR_WANT_READ
    enum: SSL_ERROR_WANT_WRITE
    enum: SSL_ERROR_ZERO_RETURN

cdef extern from "<openssl/err.h>" nogil:
    void ERR_clear_error()
    unsigned long ERR_get_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t len)


cdef enum:
    NAME_MAX = 256         # a server name, with its NUL
    LABEL_MAX = 64         # a ClientID (one DNS label), with its NUL


cdef struct TlsNames:
    # Per stream loop, reached from each handshake's SSL (its app data): the server name
    # ClientIDs sit below, and the handshakes refused for a name we do not serve.
    char ours[NAME_MAX]    # lower case, no final dot; empty: any name is accepted
    uint64_t refused


@cython.final
cdef class TlsContext:
    cdef SSL_CTX *ctx


cdef bint client_label(const char *name, const char *ours, char *label) noexcept nogil
cdef uint32_t pad(uint8_t *m, uint32_t n, uint32_t cap) noexcept nogil
