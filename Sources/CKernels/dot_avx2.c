// The AVX2 level (AMD EPYC Zen 2/3, Intel Haswell to Skylake): one row against one vector,
// and four rows against one or more vectors.
#include "blocks.h"
#include <stdlib.h>

#ifdef HONE_X86
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline float dot_block32_avx2_body(int type, const uint8_t *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    __m256 total = _mm256_setzero_ps();
    float tail = 0;
    for (size_t b = 0; b < n / 32; b++) {
        __m256i lo, hi;
        float a_lo, a_hi, c;
        decode32_avx2(type, w, b, &lo, &hi, &a_lo, &a_hi, &c);
        __m256i dlo = _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)(q + b * 32)));
        __m256i dhi = _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(q + b * 32 + 16)));
        total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dlo), _mm256_set1_ps(a_lo * s[b].d), total);
        total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dhi), _mm256_set1_ps(a_hi * s[b].d), total);
        tail += block_tail(c, s + b);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
    return _mm_cvtss_f32(s4) + tail;
}

// One copy per type, as for the AVX-512 row kernels: the decode compiled without switches.
#define HONE_DOT_AVX2_FOR(TYPE, NAME)                                                          \
    __attribute__((target("avx2,fma,f16c")))                                                   \
    static float NAME(const uint8_t *w, const int16_t *q, const hone_act_scale *s, size_t n) { \
        return dot_block32_avx2_body(TYPE, w, q, s, n);                                         \
    }
HONE_DOT_AVX2_FOR(HONE_TYPE_Q5_0, dot_q5_0_avx2)
HONE_DOT_AVX2_FOR(HONE_TYPE_Q5_1, dot_q5_1_avx2)
HONE_DOT_AVX2_FOR(HONE_TYPE_Q4_K, dot_q4_k_avx2)
HONE_DOT_AVX2_FOR(HONE_TYPE_Q5_K, dot_q5_k_avx2)
HONE_DOT_AVX2_FOR(HONE_TYPE_Q6_K, dot_q6_k_avx2)

static float dot_block32_avx2(int type, const uint8_t *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    switch (type) {
    case HONE_TYPE_Q5_0: return dot_q5_0_avx2(w, q, s, n);
    case HONE_TYPE_Q5_1: return dot_q5_1_avx2(w, q, s, n);
    case HONE_TYPE_Q4_K: return dot_q4_k_avx2(w, q, s, n);
    case HONE_TYPE_Q5_K: return dot_q5_k_avx2(w, q, s, n);
    default: return dot_q6_k_avx2(w, q, s, n);
    }
}

__attribute__((target("avx2,fma,f16c")))
float hone_dot_q_avx2(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    if (is_block32_type(type)) return dot_block32_avx2(type, (const uint8_t *)w, q, s, n);
    const uint8_t *p = (const uint8_t *)w;
    const int step = block_bytes(type);
    __m256 total = _mm256_setzero_ps();
    float tail = 0;
    for (size_t b = 0; b < n / 32; b++, p += step) {
        __m256i lo, hi;
        load_block16(type, p, &lo, &hi);
        __m256i dot = _mm256_add_epi32(
            _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)(q + b * 32))),
            _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(q + b * 32 + 16))));
        float d = _cvtsh_ss(rd16(p));
        total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * s[b].d), total);
        tail += block_tail(block_constant(type, p, d), s + b);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
    return _mm_cvtss_f32(s4) + tail;
}

// One copy of a four-row kernel per type (`BODY`, compiled for `TARGET`), so each type's
// decode is compiled without the switches on `type` (measured: the generic copy ran Q5_0
// at half Q4_1's speed).
#define HONE_ROWS4_FOR(TARGET, BODY, TYPE, NAME)                                                                      \
    __attribute__((target(TARGET)))                                                                                   \
    static void NAME(const uint8_t *w, size_t row_bytes, const int16_t *q, size_t q_stride, const hone_act_scale *s, \
                     size_t s_stride, int m, size_t n, float *out, size_t out_stride) {                              \
        BODY(TYPE, w, row_bytes, q, q_stride, s, s_stride, m, n, out, out_stride);                                   \
    }

// Any type's block b as the AVX2 kernels read it: int16 halves (values 0-15, 16-31), the
// halves' scales and the block's constant term (Q4_0's -8·d, Q4_1's m, the K-quants' mins).
__attribute__((target("avx2,fma,f16c")))
static inline __attribute__((always_inline)) void decode_any_avx2(int type, const uint8_t *row, size_t b, __m256i *lo, __m256i *hi,
                                                                  float *a_lo, float *a_hi, float *c) {
    if (is_block32_type(type)) {
        decode32_avx2(type, row, b, lo, hi, a_lo, a_hi, c);
        return;
    }
    const uint8_t *p = row + b * (size_t)block_bytes(type);
    load_block16(type, p, lo, hi);
    const float d = _cvtsh_ss(rd16(p));
    *a_lo = *a_hi = d;
    *c = type == HONE_TYPE_Q4_1 ? _cvtsh_ss(rd16(p + offsetof(hone_block_q4_1, m))) : type == HONE_TYPE_Q4_0 ? -8.0f * d : 0.0f;
}


// Four rows' blocks decoded once for all of a call's vectors (AVX2): the int16 halves of
// row r's block b at q[(r·blocks + b)·32], its scales at a_lo, a_hi and its constant at
// c[r·blocks + b]. Per-thread room, grown as rows get longer.
typedef struct {
    int16_t *q;
    float *a_lo, *a_hi, *c;
} decoded_rows4;

static __thread void *decoded_rows4_room;
static __thread size_t decoded_rows4_capacity;

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline decoded_rows4 decode_rows4_avx2(int type, const uint8_t *w, size_t row_bytes, size_t n) {
    const size_t blocks = n / 32, bytes = 4 * blocks * (32 * sizeof(int16_t) + 3 * sizeof(float));
    if (decoded_rows4_capacity < bytes) {
        free(decoded_rows4_room);
        decoded_rows4_room = malloc(bytes);
        if (!decoded_rows4_room) abort();
        decoded_rows4_capacity = bytes;
    }
    decoded_rows4 d = {(int16_t *)decoded_rows4_room, NULL, NULL, NULL};
    d.a_lo = (float *)(d.q + 4 * blocks * 32);
    d.a_hi = d.a_lo + 4 * blocks;
    d.c = d.a_hi + 4 * blocks;
    for (int r = 0; r < 4; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (size_t b = 0; b < blocks; b++) {
            const size_t i = (size_t)r * blocks + b;
            __m256i lo, hi;
            decode_any_avx2(type, row, b, &lo, &hi, &d.a_lo[i], &d.a_hi[i], &d.c[i]);
            _mm256_storeu_si256((__m256i *)(d.q + 32 * i), lo);
            _mm256_storeu_si256((__m256i *)(d.q + 32 * i + 16), hi);
        }
    }
    return d;
}

// dot_q_rows4_avx512 for AVX2 machines (AMD EPYC of this kind): four rows against one or
// two vectors, the most that keeps every accumulator in AVX2's sixteen registers. Without
// it each row was one dependency chain (latency-bound) and each vector decoded every block
// again. The four rows' constant terms accumulate in one 128-bit register per vector. As
// for AVX-512, each (row, vector) runs the same instructions whatever `m` is. With
// `decoded`, the blocks come from decode_rows4_avx2's buffer instead of the weights: the
// same integers and scales, so the same bits.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void dot_rows4_avx2_from(int type, const uint8_t *w, size_t row_bytes, const decoded_rows4 *decoded, const int16_t *q,
                                       size_t q_stride, const hone_act_scale *s, size_t s_stride, int m, size_t n, float *out,
                                       size_t out_stride) {
    __m256 acc[2][4];
    __m128 tail[2];
    for (int j = 0; j < 2; j++) {
        tail[j] = _mm_setzero_ps();
        for (int r = 0; r < 4; r++) acc[j][r] = _mm256_setzero_ps();
    }
    const size_t step16 = ahead_step(row_bytes, n), blocks = n / 32;
    for (size_t b = 0; b < blocks; b++) {
        float c[4];
        for (int r = 0; r < 4; r++) {
            __m256i lo, hi;
            float a_lo, a_hi;
            if (decoded) {
                const size_t i = (size_t)r * blocks + b;
                lo = _mm256_loadu_si256((const __m256i *)(decoded->q + 32 * i));
                hi = _mm256_loadu_si256((const __m256i *)(decoded->q + 32 * i + 16));
                a_lo = decoded->a_lo[i];
                a_hi = decoded->a_hi[i];
                c[r] = decoded->c[i];
            } else {
                const uint8_t *row = w + (size_t)r * row_bytes;
                _mm_prefetch(ahead(row, row_bytes, b, step16), _MM_HINT_T0);
                decode_any_avx2(type, row, b, &lo, &hi, &a_lo, &a_hi, &c[r]);
            }
            for (int j = 0; j < m; j++) {
                const int16_t *x = q + j * q_stride + b * 32;
                const float dx = s[j * s_stride + b].d;
                __m256i dlo = _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)x));
                __m256i dhi = _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 16)));
                if (is_block32_type(type)) {
                    acc[j][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dlo), _mm256_set1_ps(a_lo * dx), acc[j][r]);
                    acc[j][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dhi), _mm256_set1_ps(a_hi * dx), acc[j][r]);
                } else {
                    acc[j][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(dlo, dhi)), _mm256_set1_ps(a_lo * dx), acc[j][r]);
                }
            }
        }
        // block_tail for the four rows: (c·d)·Σq, then added, as the one-row kernel does.
        const __m128 cv = _mm_loadu_ps(c);
        for (int j = 0; j < m; j++) {
            const hone_act_scale *sb = s + j * s_stride + b;
            tail[j] = _mm_add_ps(tail[j], _mm_mul_ps(_mm_mul_ps(cv, _mm_set1_ps(sb->d)), _mm_set1_ps((float)sb->sum)));
        }
    }
    for (int j = 0; j < m; j++) {
        float t[4];
        _mm_storeu_ps(t, tail[j]);
        for (int r = 0; r < 4; r++) {
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[j][r]), _mm256_extractf128_ps(acc[j][r], 1));
            s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
            out[j * out_stride + r] = _mm_cvtss_f32(s4) + t[r];
        }
    }
}

// Four rows against `m` vectors: one or two decode the blocks as they go; more decode the
// four rows once into a buffer that stays in L1 and take the vectors two at a time from it
// (16 sequences decoding together had every block decoded eight times). Q8_0's blocks are
// one widening load each, no cheaper from the buffer (the output head ran ~10% slower).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void dot_rows4_avx2_body(int type, const uint8_t *w, size_t row_bytes, const int16_t *q, size_t q_stride,
                                       const hone_act_scale *s, size_t s_stride, int m, size_t n, float *out, size_t out_stride) {
    // Two call sites, each with a constant `decoded`, so each is compiled without the test.
    if (m > 2 && type != HONE_TYPE_Q8_0) {
        const decoded_rows4 decoded = decode_rows4_avx2(type, w, row_bytes, n);
        for (int j = 0; j < m; j += 2)
            dot_rows4_avx2_from(type, w, row_bytes, &decoded, q + j * q_stride, q_stride, s + j * s_stride, s_stride, m - j < 2 ? m - j : 2,
                                n, out + j * out_stride, out_stride);
    } else {
        for (int j = 0; j < m; j += 2)
            dot_rows4_avx2_from(type, w, row_bytes, NULL, q + j * q_stride, q_stride, s + j * s_stride, s_stride, m - j < 2 ? m - j : 2, n,
                                out + j * out_stride, out_stride);
    }
}

HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q8_0, rows4_q8_0_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q4_0, rows4_q4_0_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q4_1, rows4_q4_1_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q5_0, rows4_q5_0_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q5_1, rows4_q5_1_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q4_K, rows4_q4_k_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q5_K, rows4_q5_k_avx2)
HONE_ROWS4_FOR("avx2,fma,f16c", dot_rows4_avx2_body, HONE_TYPE_Q6_K, rows4_q6_k_avx2)

rows4_fn hone_rows4_avx2(int type) {
    switch (type) {
    case HONE_TYPE_Q8_0: return rows4_q8_0_avx2;
    case HONE_TYPE_Q4_0: return rows4_q4_0_avx2;
    case HONE_TYPE_Q4_1: return rows4_q4_1_avx2;
    case HONE_TYPE_Q5_0: return rows4_q5_0_avx2;
    case HONE_TYPE_Q5_1: return rows4_q5_1_avx2;
    case HONE_TYPE_Q4_K: return rows4_q4_k_avx2;
    case HONE_TYPE_Q5_K: return rows4_q5_k_avx2;
    case HONE_TYPE_Q6_K: return rows4_q6_k_avx2;
    default: return NULL;
    }
}
#endif
