// What the dot, dequantization and kernel files share: how a quantized block is read
// (the portable description and each level's decoders), where the four-row kernels
// prefetch, and the entry points each level's file gives the dispatcher (kernels.c).
// Internal to CKernels: everything here is static inline or hone_-prefixed.
#pragma once
#include "CKernels.h"
#include "kquants.h"
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HONE_X86 1
#endif

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

// ---------------------------------------------------------------- 5-bit and K-quant blocks
// These types are read through one description of a 32-value block: integers u with weight
// value a_lo·u (values 0-15) or a_hi·u (16-31), plus c. The halves' scales differ only in
// Q6_K, whose scales cover 16 values. The integer dot and the scales then combine as for the
// older types, so every level and the reference compute the same sums.

static inline int is_block32_type(int type) {
    return type == HONE_TYPE_Q5_0 || type == HONE_TYPE_Q5_1 || type == HONE_TYPE_Q4_K || type == HONE_TYPE_Q5_K || type == HONE_TYPE_Q6_K;
}

// Where 32-value block b of a row starts: its own block, or its K-quant super-block.
static inline __attribute__((always_inline)) const uint8_t *block32_base(int type, const uint8_t *row, size_t b) {
    switch (type) {
    case HONE_TYPE_Q5_0: return row + b * sizeof(hone_block_q5_0);
    case HONE_TYPE_Q5_1: return row + b * sizeof(hone_block_q5_1);
    case HONE_TYPE_Q4_K: return row + b / 8 * sizeof(hone_block_q4_k);
    case HONE_TYPE_Q5_K: return row + b / 8 * sizeof(hone_block_q5_k);
    default: return row + b / 8 * sizeof(hone_block_q6_k);
    }
}

// A block's constant term c·d·Σq (Q4_1's min, Q4_0's -8·d, the K-quants' mins). Its own
// function so that no kernel fuses it into an FMA with the running tail (clang contracts
// a·b + c inside one expression): every kernel of a level then adds the same floats in the
// same order, and a row's result is bit-identical whichever kernel (one row, four rows,
// one vector or several) computed it.
static inline float block_tail(float c, const hone_act_scale *sb) { return c * sb->d * (float)sb->sum; }

static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// The float part of block b's description (a_lo, a_hi, c); integers are decoded per level.
// `half` converts fp16 bits: the portable converter, or F16C's inside the SIMD kernels.
static inline __attribute__((always_inline)) void block32_scales_with(float (*half)(uint16_t), int type, const uint8_t *p, size_t b, float *a_lo, float *a_hi, float *c) {
    switch (type) {
    case HONE_TYPE_Q5_0:
        *a_lo = *a_hi = half(rd16(p));
        *c = 0;
        return;
    case HONE_TYPE_Q5_1:
        *a_lo = *a_hi = half(rd16(p));
        *c = half(rd16(p + offsetof(hone_block_q5_1, m)));
        return;
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K: {
        int sc, m;
        hone_k_scale_min((int)(b % 8), p + offsetof(hone_block_q4_k, scales), &sc, &m);
        *a_lo = *a_hi = half(rd16(p)) * (float)sc;
        *c = -(half(rd16(p + offsetof(hone_block_q4_k, dmin))) * (float)m);
        return;
    }
    default: {
        const hone_block_q6_k *k = (const hone_block_q6_k *)p;
        float d = half(rd16(p + offsetof(hone_block_q6_k, d)));
        *a_lo = d * (float)k->scales[2 * (b % 8)];
        *a_hi = d * (float)k->scales[2 * (b % 8) + 1];
        *c = 0;
        return;
    }
    }
}

static inline void block32_scales(int type, const uint8_t *p, size_t b, float *a_lo, float *a_hi, float *c) {
    block32_scales_with(hone_f16_to_f32, type, p, b, a_lo, a_hi, c);
}

// Block b of a row of a 5-bit or K-quant type, in plain C; 0 for another type.
static inline int decode32_ref(int type, const uint8_t *row, size_t b, int16_t u[32], float *a_lo, float *a_hi, float *c) {
    if (!is_block32_type(type)) return 0;
    const uint8_t *p = block32_base(type, row, b);
    block32_scales(type, p, b, a_lo, a_hi, c);
    int j = (int)(b % 8);
    switch (type) {
    case HONE_TYPE_Q5_0:
    case HONE_TYPE_Q5_1: {
        int one = type == HONE_TYPE_Q5_1;
        uint32_t qh = rd32(p + (one ? offsetof(hone_block_q5_1, qh) : offsetof(hone_block_q5_0, qh)));
        const uint8_t *qs = p + (one ? offsetof(hone_block_q5_1, qs) : offsetof(hone_block_q5_0, qs));
        for (int l = 0; l < 16; l++) {
            u[l] = (int16_t)(((qs[l] & 0x0f) | ((qh >> l) & 1) << 4) - (one ? 0 : 16));
            u[l + 16] = (int16_t)(((qs[l] >> 4) | ((qh >> (l + 16)) & 1) << 4) - (one ? 0 : 16));
        }
        return 1;
    }
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K: {
        int five = type == HONE_TYPE_Q5_K;
        const uint8_t *q = p + (five ? offsetof(hone_block_q5_k, qs) : offsetof(hone_block_q4_k, qs)) + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            int v = (j & 1) ? q[l] >> 4 : q[l] & 0x0f;
            if (five) v |= ((((const hone_block_q5_k *)p)->qh[l] >> j) & 1) << 4;
            u[l] = (int16_t)v;
        }
        return 1;
    }
    default:
        for (int l = 0; l < 32; l++) u[l] = (int16_t)(hone_q6_k_value((const hone_block_q6_k *)p, 32 * j + l) - 32);
        return 1;
    }
}

// The portable quantized dot (kernels.c), which every level falls back to.
float hone_dot_q_reference(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n);

#ifdef HONE_X86
// The 32 weight values of a block as int16 in two 16-lane halves (elements 0-15, 16-31).
__attribute__((target("avx2")))
static inline void load_block16(int type, const uint8_t *p, __m256i *lo, __m256i *hi) {
    if (type == HONE_TYPE_Q8_0) {
        const uint8_t *qs = p + offsetof(hone_block_q8_0, qs);
        *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
        *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
    } else {
        size_t qs = type == HONE_TYPE_Q4_1 ? offsetof(hone_block_q4_1, qs) : offsetof(hone_block_q4_0, qs);
        __m128i packed = _mm_loadu_si128((const __m128i *)(p + qs));
        const __m128i low = _mm_set1_epi8(0x0f);
        *lo = _mm256_cvtepu8_epi16(_mm_and_si128(packed, low));
        *hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low));
    }
}

static inline int block_bytes(int type) {
    return type == HONE_TYPE_Q8_0 ? sizeof(hone_block_q8_0) : type == HONE_TYPE_Q4_1 ? sizeof(hone_block_q4_1) : sizeof(hone_block_q4_0);
}

// A flat block's constant term before scaling by the activations (Q4_0's -8·d, Q4_1's and
// Q5_1's m; 0 for Q8_0 and Q5_0).
// F16C's conversion, exact like the portable one (which cost the AVX2 Q4_1 path ~20%).
__attribute__((target("f16c")))
static inline float block_constant(int type, const uint8_t *p, float d) {
    if (type == HONE_TYPE_Q4_1) return _cvtsh_ss(rd16(p + offsetof(hone_block_q4_1, m)));
    if (type == HONE_TYPE_Q5_1) return _cvtsh_ss(rd16(p + offsetof(hone_block_q5_1, m)));
    if (type == HONE_TYPE_Q4_0) return -8.0f * d;
    return 0;
}

__attribute__((target("f16c")))
static inline __attribute__((always_inline)) float half_f16c(uint16_t h) { return _cvtsh_ss(h); }

// Block b of a 5-bit or K-quant row as int16 in two 16-lane halves, and its scales.
__attribute__((target("avx2,fma,f16c")))
static inline __attribute__((always_inline)) void decode32_avx2(int type, const uint8_t *row, size_t b, __m256i *lo, __m256i *hi, float *a_lo, float *a_hi, float *c) {
    const uint8_t *p = block32_base(type, row, b);
    block32_scales_with(half_f16c, type, p, b, a_lo, a_hi, c);
    const int j = (int)(b % 8);
    const __m128i nibble = _mm_set1_epi8(0x0f);
    switch (type) {
    case HONE_TYPE_Q5_0:
    case HONE_TYPE_Q5_1: {
        const int one = type == HONE_TYPE_Q5_1;
        uint32_t qh = rd32(p + (one ? offsetof(hone_block_q5_1, qh) : offsetof(hone_block_q5_0, qh)));
        __m128i packed = _mm_loadu_si128((const __m128i *)(p + (one ? offsetof(hone_block_q5_1, qs) : offsetof(hone_block_q5_0, qs))));
        // Lane l of a half gets 16 when bit l of that half of qh is set.
        const __m256i bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, (short)0x8000);
        const __m256i sixteen = _mm256_set1_epi16(16);
        __m256i h0 = _mm256_and_si256(_mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16((short)(qh & 0xffff)), bit), bit), sixteen);
        __m256i h1 = _mm256_and_si256(_mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16((short)(qh >> 16)), bit), bit), sixteen);
        *lo = _mm256_or_si256(_mm256_cvtepu8_epi16(_mm_and_si128(packed, nibble)), h0);
        *hi = _mm256_or_si256(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), nibble)), h1);
        if (!one) {
            *lo = _mm256_sub_epi16(*lo, sixteen);
            *hi = _mm256_sub_epi16(*hi, sixteen);
        }
        return;
    }
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K: {
        const int five = type == HONE_TYPE_Q5_K;
        const uint8_t *q = p + (five ? offsetof(hone_block_q5_k, qs) : offsetof(hone_block_q4_k, qs)) + 32 * (j / 2);
        const __m128i shift = _mm_cvtsi32_si128((j & 1) * 4);
        *lo = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)q), shift), nibble));
        *hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(q + 16)), shift), nibble));
        if (five) {
            const uint8_t *qh = p + offsetof(hone_block_q5_k, qh);
            const __m128i at = _mm_cvtsi32_si128(j);
            const __m256i one_bit = _mm256_set1_epi16(1);
            __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)qh)), at), one_bit);
            __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(qh + 16))), at), one_bit);
            *lo = _mm256_or_si256(*lo, _mm256_slli_epi16(h0, 4));
            *hi = _mm256_or_si256(*hi, _mm256_slli_epi16(h1, 4));
        }
        return;
    }
    default: {
        const hone_block_q6_k *k = (const hone_block_q6_k *)p;
        const int half = j / 4, t = j % 4;
        const uint8_t *ql = k->ql + 64 * half + 32 * (t & 1), *qh = k->qh + 32 * half;
        const __m128i shift = _mm_cvtsi32_si128((t & 2) ? 4 : 0), at = _mm_cvtsi32_si128(2 * t);
        const __m256i three = _mm256_set1_epi16(3), offset = _mm256_set1_epi16(32);
        __m256i l0 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)ql), shift), nibble));
        __m256i l1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(ql + 16)), shift), nibble));
        __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)qh)), at), three);
        __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(qh + 16))), at), three);
        *lo = _mm256_sub_epi16(_mm256_or_si256(l0, _mm256_slli_epi16(h0, 4)), offset);
        *hi = _mm256_sub_epi16(_mm256_or_si256(l1, _mm256_slli_epi16(h1, 4)), offset);
        return;
    }
    }
}

// The integers of block j of the block (or K-quant super-block) at p, as decode32_avx2's
// in one 512-bit register (values 0-31 as int16), with AVX-512BW's byte masks for the
// fifth and sixth bits: ~2x fewer instructions per block.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static inline __attribute__((always_inline)) __m512i ints32_avx512(int type, const uint8_t *p, int j) {
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    switch (type) {
    case HONE_TYPE_Q5_0:
    case HONE_TYPE_Q5_1: {
        const int one = type == HONE_TYPE_Q5_1;
        uint32_t qh = rd32(p + (one ? offsetof(hone_block_q5_1, qh) : offsetof(hone_block_q5_0, qh)));
        __m128i packed = _mm_loadu_si128((const __m128i *)(p + (one ? offsetof(hone_block_q5_1, qs) : offsetof(hone_block_q5_0, qs))));
        // Bytes 0-15: low nibbles (values 0-15); 16-31: high nibbles (values 16-31).
        __m256i both = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4), 1), nibble);
        __m512i v = _mm512_or_si512(_mm512_cvtepu8_epi16(both), _mm512_maskz_mov_epi16((__mmask32)qh, _mm512_set1_epi16(16)));
        return one ? v : _mm512_sub_epi16(v, _mm512_set1_epi16(16));
    }
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K: {
        const int five = type == HONE_TYPE_Q5_K;
        const uint8_t *q = p + (five ? offsetof(hone_block_q5_k, qs) : offsetof(hone_block_q4_k, qs)) + 32 * (j / 2);
        __m256i bytes = _mm256_loadu_si256((const __m256i *)q);
        if (j & 1) bytes = _mm256_srli_epi16(bytes, 4);
        __m512i v = _mm512_cvtepu8_epi16(_mm256_and_si256(bytes, nibble));
        if (five) {
            __mmask32 high = _mm256_test_epi8_mask(_mm256_loadu_si256((const __m256i *)(p + offsetof(hone_block_q5_k, qh))), _mm256_set1_epi8((char)(1 << j)));
            v = _mm512_or_si512(v, _mm512_maskz_mov_epi16(high, _mm512_set1_epi16(16)));
        }
        return v;
    }
    default: {
        const hone_block_q6_k *k = (const hone_block_q6_k *)p;
        const int half = j / 4, t = j % 4;
        __m256i low = _mm256_loadu_si256((const __m256i *)(k->ql + 64 * half + 32 * (t & 1)));
        if (t & 2) low = _mm256_srli_epi16(low, 4);
        __m256i high = _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(k->qh + 32 * half)), _mm_cvtsi32_si128(2 * t));
        high = _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(3)), 4);
        __m256i q6 = _mm256_or_si256(_mm256_and_si256(low, nibble), high);
        return _mm512_sub_epi16(_mm512_cvtepu8_epi16(q6), _mm512_set1_epi16(32));
    }
    }
}

// Block b of a 5-bit or K-quant row: its scales and its integers in one 512-bit register.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static inline __attribute__((always_inline)) __m512i decode32_avx512(int type, const uint8_t *row, size_t b, float *a_lo, float *a_hi, float *c) {
    const uint8_t *p = block32_base(type, row, b);
    block32_scales_with(half_f16c, type, p, b, a_lo, a_hi, c);
    return ints32_avx512(type, p, (int)(b % 8));
}

// Whether the SIMD kernels read a type (all quantized types Hone reads).
static inline int has_kernels(int type) {
    return is_block32_type(type) || type == HONE_TYPE_Q8_0 || type == HONE_TYPE_Q4_0 || type == HONE_TYPE_Q4_1;
}

// Whether a type's values carry an additive constant c (x = a·q + c) when dequantized.
static inline int has_offset(int type) {
    return type == HONE_TYPE_Q4_1 || type == HONE_TYPE_Q5_1 || type == HONE_TYPE_Q4_K || type == HONE_TYPE_Q5_K;
}

// Block b of a Q8_0, Q4_0 or Q4_1 row as the portable dequantization reads it: int16
// halves (Q4_0's already less 8, so d·(q − 8) rounds as there), the scale d, Q4_1's m.
__attribute__((target("avx2,f16c")))
static inline __attribute__((always_inline)) void legacy_block_avx2(int type, const uint8_t *src, size_t b, __m256i *lo, __m256i *hi,
                                                                    float *d, float *c) {
    const uint8_t *p = src + b * (size_t)block_bytes(type);
    load_block16(type, p, lo, hi);
    if (type == HONE_TYPE_Q4_0) {
        *lo = _mm256_sub_epi16(*lo, _mm256_set1_epi16(8));
        *hi = _mm256_sub_epi16(*hi, _mm256_set1_epi16(8));
    }
    *d = _cvtsh_ss(rd16(p));
    *c = type == HONE_TYPE_Q4_1 ? _cvtsh_ss(rd16(p + offsetof(hone_block_q4_1, m))) : 0;
}

// Where the four-row kernels prefetch while decoding block b of a row: rows stream from
// DRAM, so ask for the same share of the row four rows on (the next group's), and every
// cache line of the next group has been asked for when it starts (8 blocks ahead of the
// row itself decoded ~15% slower on AMD EPYC). Proportional, not the block's own address:
// a K-quant block's address is its super-block's, whose later lines it would never fetch.
// `step16` is ahead_step's: the bytes per block in 16.16 fixed point, so no division per block.
static inline size_t ahead_step(size_t row_bytes, size_t n) { return (row_bytes << 16) / (n / 32); }
static inline const char *ahead(const uint8_t *row, size_t row_bytes, size_t b, size_t step16) {
    return (const char *)(row + 4 * row_bytes + ((b * step16) >> 16));
}

#define HONE_AVX512 "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,bmi2"


// ---------------------------------------------------------------- each level's entry points
// dot_avx2.c: one row against one vector, and four rows against several (NULL for a type
// without them).
typedef void (*rows4_fn)(const uint8_t *, size_t, const int16_t *, size_t, const hone_act_scale *, size_t, int, size_t, float *, size_t);
float hone_dot_q_avx2(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n);
rows4_fn hone_rows4_avx2(int type);

// dot_avx512.c: whether the level reads a type, one row against one vector, and the rows
// of hone_dot_q_rows_multi.
int hone_avx512_reads(int type);
float hone_dot_q_avx512(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n);
void hone_rows_multi_avx512(int type, const uint8_t *p, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
                            const hone_act_scale *scales, size_t scales_stride, int m, size_t n, float *out, size_t out_stride);
#endif
