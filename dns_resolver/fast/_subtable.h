/* The subscribers' serving table: address -> (policy index, own-lists id), shared by every
 * worker through one memory-mapped file (docs/subscribers.md).
 *
 * One open-addressing hash table (linear probing, backward-shift deletion, so no
 * tombstones) of 16-byte entries behind a 64-byte header. IPv4 entries are exact /32s;
 * IPv6 entries are prefixes /48../64 keyed by their first 64 bits, so a lookup probes only
 * the prefix lengths in use (a bit each in `v6_lengths`), longest first.
 *
 * One process writes (the subscriber service); it changes entries in place between two
 * increments of `seq` (a seqlock): readers retry when `seq` was odd or moved during their
 * lookup. A table that must grow is copied into a new file renamed over the old one, and
 * the old one is marked `retired` so readers map the new file.
 */
#ifndef FD_SUBTABLE_H
#define FD_SUBTABLE_H

#include <stdint.h>
#include <string.h>

#define SUB_MAGIC 0x3142545355424446ULL /* "FDSUBTB1" */
#define SUB_V6_MIN 48
#define SUB_V6_MAX 64
#define SUB_V4 32
#define SUB_READ_TRIES 4096

typedef struct {
    uint64_t magic;
    uint64_t seq;        /* odd while the writer changes entries */
    uint64_t capacity;   /* slots, a power of two */
    uint64_t count;      /* used slots */
    uint32_t v6_lengths; /* bit (plen - 48) set while a /plen entry may exist */
    uint32_t retired;    /* 1: replaced by a bigger file at the same path */
    uint64_t changes;    /* entries written or removed since the file was made */
    uint64_t pad[2];
} sub_header;

typedef struct {
    uint64_t key;        /* IPv4: the address; IPv6: the first 64 bits, masked to plen */
    uint8_t plen;        /* 0: empty slot; 32: IPv4 /32; 48..64: IPv6 prefix */
    uint8_t pad;
    uint16_t policy;     /* policy index */
    uint32_t lists;      /* own-lists id; 0: none */
} sub_entry;

static inline sub_entry *sub_entries(const sub_header *h) {
    return (sub_entry *)((char *)h + sizeof(sub_header));
}

static inline uint64_t sub_hash(uint64_t key, uint8_t plen) {
    /* splitmix64's finaliser: addresses in a pool differ in their low bits only */
    uint64_t z = key ^ ((uint64_t)plen << 57) ^ 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t sub_v6_key(const uint8_t *addr, int plen) {
    uint64_t k = 0;
    for (int i = 0; i < 8; i++)
        k = (k << 8) | addr[i];
    return plen >= 64 ? k : k & ~((1ULL << (64 - plen)) - 1);
}

/* The slot holding (key, plen), or -1. No locking: see sub_lookup. */
static inline int64_t sub_find(const sub_header *h, uint64_t key, uint8_t plen) {
    const sub_entry *e = sub_entries(h);
    uint64_t mask = h->capacity - 1;
    uint64_t i = sub_hash(key, plen) & mask;
    for (uint64_t n = 0; n <= mask; n++) {
        const sub_entry *s = &e[i];
        if (s->plen == 0)
            return -1;
        if (s->key == key && s->plen == plen)
            return (int64_t)i;
        i = (i + 1) & mask;
    }
    return -1;
}

static inline int sub_find_addr(const sub_header *h, int family, const uint8_t *addr,
                                uint32_t *lists) {
    int64_t i;
    if (family == 4) {
        uint64_t key = ((uint64_t)addr[0] << 24) | ((uint64_t)addr[1] << 16) |
                       ((uint64_t)addr[2] << 8) | addr[3];
        i = sub_find(h, key, SUB_V4);
    } else {
        uint32_t lengths = h->v6_lengths;
        uint64_t top = sub_v6_key(addr, 64);
        i = -1;
        /* only the prefix lengths in use, longest first */
        while (lengths && i < 0) {
            int bit = 31 - __builtin_clz(lengths);
            int plen = SUB_V6_MIN + bit;
            uint64_t key = plen >= 64 ? top : top & ~((1ULL << (64 - plen)) - 1);
            i = sub_find(h, key, (uint8_t)plen);
            lengths &= ~(1U << bit);
        }
    }
    if (i < 0)
        return -1;
    *lists = sub_entries(h)[i].lists;
    return sub_entries(h)[i].policy;
}

/* The policy index of the subscriber holding `addr` (4 or 16 bytes), -1 when none holds it,
 * -2 when the writer kept the table busy for all our tries (the caller asks again later). */
static inline int sub_lookup(const sub_header *h, int family, const uint8_t *addr,
                             uint32_t *lists) {
    for (int t = 0; t < SUB_READ_TRIES; t++) {
        uint64_t s1 = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1)
            continue;
        int r = sub_find_addr(h, family, addr, lists);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&h->seq, __ATOMIC_RELAXED) == s1)
            return r;
    }
    return -2;
}

/* -- the writer (one process) --------------------------------------------------------- */

static inline void sub_write_begin(sub_header *h) {
    __atomic_store_n(&h->seq, h->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void sub_write_end(sub_header *h) {
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&h->seq, h->seq + 1, __ATOMIC_RELEASE);
    h->changes++;
}

/* Set (key, plen) -> (policy, lists); returns 1 when added, 0 when replaced. The caller
 * keeps the load below 3/4 (so a free slot exists) and brackets with write_begin/end. */
static inline int sub_put(sub_header *h, uint64_t key, uint8_t plen, uint16_t policy,
                          uint32_t lists) {
    sub_entry *e = sub_entries(h);
    uint64_t mask = h->capacity - 1;
    uint64_t i = sub_hash(key, plen) & mask;
    while (e[i].plen != 0) {
        if (e[i].key == key && e[i].plen == plen) {
            e[i].policy = policy;
            e[i].lists = lists;
            return 0;
        }
        i = (i + 1) & mask;
    }
    e[i].key = key;
    e[i].policy = policy;
    e[i].lists = lists;
    e[i].pad = 0;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    e[i].plen = plen;
    if (plen != SUB_V4)
        h->v6_lengths |= 1U << (plen - SUB_V6_MIN);
    h->count++;
    return 1;
}

/* Remove (key, plen); returns 1 when it was there. Backward-shift deletion: the entries
 * after it in its probe run move up, so no tombstone slows later lookups. */
static inline int sub_del(sub_header *h, uint64_t key, uint8_t plen) {
    sub_entry *e = sub_entries(h);
    uint64_t mask = h->capacity - 1;
    int64_t found = sub_find(h, key, plen);
    if (found < 0)
        return 0;
    uint64_t hole = (uint64_t)found, j = hole;
    for (;;) {
        j = (j + 1) & mask;
        if (e[j].plen == 0)
            break;
        uint64_t home = sub_hash(e[j].key, e[j].plen) & mask;
        /* e[j] may fill the hole when its home is not cyclically in (hole, j] */
        if ((j > hole && (home <= hole || home > j)) || (j < hole && home <= hole && home > j)) {
            e[hole] = e[j];
            hole = j;
        }
    }
    memset(&e[hole], 0, sizeof(sub_entry));
    h->count--;
    return 1;
}

#endif
