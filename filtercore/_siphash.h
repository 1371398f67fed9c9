/* SipHash-2-4 (Aumasson & Bernstein, 2012): a keyed 64-bit hash, so that nobody who does
 * not know a build's secret key can craft a name whose hash collides with a listed one. */
#ifndef FILTERCORE_SIPHASH_H
#define FILTERCORE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FC_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define FC_SIPROUND                                                                        \
    do {                                                                                   \
        v0 += v1; v1 = FC_ROTL(v1, 13); v1 ^= v0; v0 = FC_ROTL(v0, 32);                   \
        v2 += v3; v3 = FC_ROTL(v3, 16); v3 ^= v2;                                          \
        v0 += v3; v3 = FC_ROTL(v3, 21); v3 ^= v0;                                          \
        v2 += v1; v1 = FC_ROTL(v1, 17); v1 ^= v2; v2 = FC_ROTL(v2, 32);                    \
    } while (0)

static inline uint64_t fc_load64_le(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len) {
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    const unsigned char *end = in + (len & ~(size_t)7);
    uint64_t m, b = ((uint64_t)len) << 56;
    for (; in != end; in += 8) {
        m = fc_load64_le(in);
        v3 ^= m;
        FC_SIPROUND;
        FC_SIPROUND;
        v0 ^= m;
    }
    switch (len & 7) {
        case 7: b |= ((uint64_t)in[6]) << 48; /* fall through */
        case 6: b |= ((uint64_t)in[5]) << 40; /* fall through */
        case 5: b |= ((uint64_t)in[4]) << 32; /* fall through */
        case 4: b |= ((uint64_t)in[3]) << 24; /* fall through */
        case 3: b |= ((uint64_t)in[2]) << 16; /* fall through */
        case 2: b |= ((uint64_t)in[1]) << 8; /* fall through */
        case 1: b |= ((uint64_t)in[0]); break;
        case 0: break;
    }
    v3 ^= b;
    FC_SIPROUND;
    FC_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    FC_SIPROUND;
    FC_SIPROUND;
    FC_SIPROUND;
    FC_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

#endif
