// Dot-product kernels. Reference versions are plain C; fast versions use per-function
// target attributes so the library needs no global -march and runs on any x86-64 (or
// other) CPU, picking the best variant once at run time.
#include "CKernels.h"
#include "kquants.h"
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HONE_X86 1
#endif

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int cpu_level = 0;
static _Atomic int active_level = 0;
static pthread_once_t levels_once = PTHREAD_ONCE_INIT;

static const char *level_names[] = {"reference", "avx2", "avx512"};

// What the CPU can run, then the level in use: HONE_KERNELS when set (a lower level for
// tests and benchmarks), else the highest. Asking for a level the CPU lacks, or a name
// that is no level, stops the process at its first kernel call with the reason: running
// another level than the one asked for would make every figure and test result a lie.
static void detect_levels(void) {
#ifdef HONE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) cpu_level = 1;
    if (cpu_level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("bmi2")) cpu_level = 2;
#endif
    int level = cpu_level;
    const char *asked = getenv("HONE_KERNELS");
    if (asked && *asked) {
        level = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(asked, level_names[i]) == 0) level = i;
        if (level < 0 || level > cpu_level) {
            fprintf(stderr, "hone: HONE_KERNELS=%s %s; this CPU runs: %s\n", asked,
                    level < 0 ? "is not a kernel level (reference, avx2, avx512)" : "asks for instructions this CPU lacks",
                    cpu_level == 2 ? "reference, avx2, avx512" : cpu_level == 1 ? "reference, avx2" : "reference");
            exit(2);
        }
    }
    active_level = level;
}

int hone_cpu_level(void) {
    pthread_once(&levels_once, detect_levels);
    return cpu_level;
}

int hone_kernels_level(void) {
    pthread_once(&levels_once, detect_levels);
    return active_level;
}

const char *hone_kernels_level_name(int level) {
    return level >= 0 && level <= 2 ? level_names[level] : "unknown";
}

int hone_kernels_use(int level) {
    int previous = hone_kernels_level();
    if (level < 0 || level > cpu_level) return -1;
    active_level = level;
    return previous;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

// ---------------------------------------------------------------- float dot

static float dot_f32_ref(const float *a, const float *b, size_t n) {
    // Eight partial sums, so the reference and SIMD versions round alike closely.
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

#ifdef HONE_X86
__attribute__((target("avx2,fma")))
static float dot_f32_avx2(const float *a, const float *b, size_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
    float s = _mm_cvtss_f32(s4);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

__attribute__((target("avx512f")))
static float dot_f32_avx512(const float *a, const float *b, size_t n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}
#endif

float hone_dot_f32(const float *a, const float *b, size_t n) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: return dot_f32_avx512(a, b, n);
    case 1: return dot_f32_avx2(a, b, n);
    default: break;
    }
#endif
    return dot_f32_ref(a, b, n);
}

// ---------------------------------------------------------------- int16 activations

static void quantize_activations_ref(const float *x, size_t n, int16_t *q, hone_act_scale *scales) {
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 32767.0f;
        float id = d ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            int v = (int)lrintf(xb[j] * id);
            v = v > 32767 ? 32767 : v < -32767 ? -32767 : v;
            q[b * 32 + j] = (int16_t)v;
            sum += v;
        }
        scales[b].d = d;
        scales[b].sum = sum;
    }
}

#ifdef HONE_X86
// The same rounding as the reference, eight lanes at a time: the product x·(1/d) is the
// same float, and cvtps rounds to nearest-even as lrintf does in the default mode, so the
// int16 values, scales and sums are bit-identical. Decode quantizes ~200 vectors per token.
__attribute__((target("avx2,fma")))
static void quantize_activations_avx2(const float *x, size_t n, int16_t *q, hone_act_scale *scales) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i top = _mm256_set1_epi32(32767), bottom = _mm256_set1_epi32(-32767);
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        __m256 v[4];
        for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(xb + 8 * i);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 32767.0f;
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        __m256i r[4], total = _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            r[i] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[i], id)), top), bottom);
            total = _mm256_add_epi32(total, r[i]);
        }
        // packs works within 128-bit lanes; the permute puts the halves back in order.
        _mm256_storeu_si256((__m256i *)(q + b * 32), _mm256_permute4x64_epi64(_mm256_packs_epi32(r[0], r[1]), 0xd8));
        _mm256_storeu_si256((__m256i *)(q + b * 32 + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(r[2], r[3]), 0xd8));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        scales[b].d = d;
        scales[b].sum = _mm_cvtsi128_si32(t);
    }
}
#endif

void hone_quantize_activations(const float *x, size_t n, int16_t *q, hone_act_scale *scales) {
#ifdef HONE_X86
    if (hone_kernels_level() >= 1) {
        quantize_activations_avx2(x, n, q, scales);
        return;
    }
#endif
    quantize_activations_ref(x, n, q, scales);
}

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
static int decode32_ref(int type, const uint8_t *row, size_t b, int16_t u[32], float *a_lo, float *a_hi, float *c) {
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

// Reference: integer dot per block, then scaled. Weight value = d·q (Q8_0), d·(q-8)
// (Q4_0), d·q + m (Q4_1).
static float dot_q_ref(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    const uint8_t *p = (const uint8_t *)w;
    float total = 0;
    for (size_t b = 0; b < n / 32; b++) {
        const int16_t *qb = q + b * 32;
        int32_t acc = 0;
        switch (type) {
        case HONE_TYPE_Q8_0: {
            float d = hone_f16_to_f32(rd16(p));
            const int8_t *wq = (const int8_t *)(p + offsetof(hone_block_q8_0, qs));
            for (int j = 0; j < 32; j++) acc += wq[j] * qb[j];
            total += d * s[b].d * (float)acc;
            p += sizeof(hone_block_q8_0);
            break;
        }
        case HONE_TYPE_Q4_0: {
            float d = hone_f16_to_f32(rd16(p));
            const uint8_t *qs = p + offsetof(hone_block_q4_0, qs);
            for (int j = 0; j < 16; j++) acc += (qs[j] & 0x0f) * qb[j] + (qs[j] >> 4) * qb[j + 16];
            total += d * s[b].d * (float)(acc - 8 * s[b].sum);
            p += sizeof(hone_block_q4_0);
            break;
        }
        case HONE_TYPE_Q4_1: {
            float d = hone_f16_to_f32(rd16(p));
            float m = hone_f16_to_f32(rd16(p + offsetof(hone_block_q4_1, m)));
            const uint8_t *qs = p + offsetof(hone_block_q4_1, qs);
            for (int j = 0; j < 16; j++) acc += (qs[j] & 0x0f) * qb[j] + (qs[j] >> 4) * qb[j + 16];
            total += d * s[b].d * (float)acc + m * s[b].d * (float)s[b].sum;
            p += sizeof(hone_block_q4_1);
            break;
        }
        default: {
            int16_t u[32];
            float a_lo, a_hi, c;
            if (!decode32_ref(type, (const uint8_t *)w, b, u, &a_lo, &a_hi, &c)) return NAN;
            int32_t lo = 0, hi = 0;
            for (int j = 0; j < 16; j++) { lo += u[j] * qb[j]; hi += u[j + 16] * qb[j + 16]; }
            total += a_lo * s[b].d * (float)lo + a_hi * s[b].d * (float)hi + c * s[b].d * (float)s[b].sum;
            break;
        }
        }
    }
    return total;
}

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

// The block's constant term before scaling by the activations (Q4_0's -8·d, Q4_1's m).
// F16C's conversion, exact like the portable one (which cost the AVX2 Q4_1 path ~20%).
__attribute__((target("f16c")))
static inline float block_constant(int type, const uint8_t *p, float d) {
    if (type == HONE_TYPE_Q4_1) return _cvtsh_ss(rd16(p + offsetof(hone_block_q4_1, m)));
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

// dequantize_avx512 for AVX2 machines: the same operations on eight values at a time.
__attribute__((target("avx2,fma,f16c")))
static void dequantize_avx2(int type, const uint8_t *src, float *dst, size_t n) {
    const int offset = has_offset(type);
    for (size_t b = 0; b < n / 32; b++) {
        __m256i lo, hi;
        float a_lo, a_hi, c;
        if (is_block32_type(type)) {
            decode32_avx2(type, src, b, &lo, &hi, &a_lo, &a_hi, &c);
        } else {
            legacy_block_avx2(type, src, b, &lo, &hi, &a_lo, &c);
            a_hi = a_lo;
        }
        const __m128i parts[4] = {_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1), _mm256_castsi256_si128(hi),
                                  _mm256_extracti128_si256(hi, 1)};
        for (int i = 0; i < 4; i++) {
            __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(parts[i])), _mm256_set1_ps(i < 2 ? a_lo : a_hi));
            if (offset) v = _mm256_add_ps(v, _mm256_set1_ps(c));
            _mm256_storeu_ps(dst + b * 32 + 8 * i, v);
        }
    }
}

// Block by block (decode32_avx512; legacy_block_avx2 for Q8_0, Q4_0, Q4_1): value = a·q,
// then + c, each rounded on its own as in the portable loops (no FMA), so the floats are
// the same. c is skipped where the type has none (Q8_0, Q4_0, Q5_0, Q6_K): adding +0 would
// turn a -0 product into +0.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void dequantize_avx512(int type, const uint8_t *src, float *dst, size_t n) {
    const int offset = has_offset(type);
    for (size_t b = 0; b < n / 32; b++) {
        float a_lo, a_hi, c;
        __m512i q;
        if (is_block32_type(type)) {
            q = decode32_avx512(type, src, b, &a_lo, &a_hi, &c);
        } else {
            __m256i lo, hi;
            legacy_block_avx2(type, src, b, &lo, &hi, &a_lo, &c);
            a_hi = a_lo;
            q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        }
        __m512 lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(q))), _mm512_set1_ps(a_lo));
        __m512 hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(q, 1))), _mm512_set1_ps(a_hi));
        if (offset) {
            lo = _mm512_add_ps(lo, _mm512_set1_ps(c));
            hi = _mm512_add_ps(hi, _mm512_set1_ps(c));
        }
        _mm512_storeu_ps(dst + b * 32, lo);
        _mm512_storeu_ps(dst + b * 32 + 16, hi);
    }
}

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
static float dot_q_avx2(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
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

// The AVX-512 one-row kernel (below, beside the level's other kernels).
static float dot_q_avx512(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n);
#endif

float hone_dot_q(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: return dot_q_avx512(type, w, q, s, n);
    case 1: return dot_q_avx2(type, w, q, s, n);
    default: break;
    }
#endif
    return dot_q_ref(type, w, q, s, n);
}

#ifdef HONE_X86
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

// ---------------------------------------------------------------- AVX-512: exact block sums
// At this level a (row, vector) product is, block by block in order,
//     acc ← fma(float(S), a·d, acc)        tail ← fma(c, d·Σq, tail)        result = acc + tail
// where S is the block's integer dot product, exact in int32 (Q6_K: its two 16-value halves,
// low then high, each with its own scale a_lo, a_hi), and d the activations' block scale.
// Summing a block in integers before converting is what lets many vectors share a row's
// work: with one activation vector per int32 lane, vpdpwssd accumulates a whole block per
// lane, and the float work (convert, scale, FMA) is done once per block for sixteen vectors.
// Every kernel of the level computes exactly this, one (row, vector) at a time, four rows
// at a time, or sixteen vectors at a time, so results never depend on the kernel, nor on
// how many sequences share a decode step.

// Block b of any type's row: its integers in one register, its halves' scales and its
// constant term.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static inline __attribute__((always_inline)) __m512i decode_any_avx512(int type, const uint8_t *row, size_t b, float *a_lo, float *a_hi, float *c) {
    if (is_block32_type(type)) return decode32_avx512(type, row, b, a_lo, a_hi, c);
    const uint8_t *p = row + b * (size_t)block_bytes(type);
    __m256i lo, hi;
    load_block16(type, p, &lo, &hi);
    *a_lo = *a_hi = _cvtsh_ss(rd16(p));
    *c = block_constant(type, p, *a_lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// The sum of eight int32 lanes.
__attribute__((target("avx2")))
static inline int32_t sum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

// One row against one vector.
__attribute__((target(HONE_AVX512), always_inline))
static inline float dot_row_avx512_body(int type, const uint8_t *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    const int halves = type == HONE_TYPE_Q6_K;
    float acc = 0, tail = 0;
    for (size_t b = 0; b < n / 32; b++) {
        float a_lo, a_hi, c;
        const __m512i pairs = _mm512_madd_epi16(decode_any_avx512(type, w, b, &a_lo, &a_hi, &c), _mm512_loadu_si512(q + b * 32));
        const __m256i lo = _mm512_castsi512_si256(pairs), hi = _mm512_extracti64x4_epi64(pairs, 1);
        const float dx = s[b].d;
        if (halves) {
            acc = fmaf((float)sum8_epi32(lo), a_lo * dx, acc);
            acc = fmaf((float)sum8_epi32(hi), a_hi * dx, acc);
        } else {
            acc = fmaf((float)sum8_epi32(_mm256_add_epi32(lo, hi)), a_lo * dx, acc);
        }
        tail = fmaf(c, dx * (float)s[b].sum, tail);
    }
    return acc + tail;
}

// ---------------------------------------------------------------- AVX-512: one vector in lane order
// Decode (one activation vector) is bound by the vector ports on Intel: widening each
// block's bytes to int16 (vinserti128, vpmovzxbw) and gathering four rows' fp16 scales into
// a vector (vpinsrw, vpunpcklwd) took ~2/3 of the loop's shuffle-port work, so the
// per-layer products read 9-12 GB/s against 29.8 measured. In *lane order* a block's values
// sit where one broadcast load of its bytes puts them, so a per-word shift and mask decodes
// it with no shuffle: 128-bit lane L holds as int16 word i the value
//     L0: 2i    L1: 16 + 2i    L2: 2i + 1    L3: 17 + 2i
// (bytes 2i, 2i+1 of the block's first 16 bytes and of its second: a 32-byte broadcast for
// one byte per value, a 16-byte one for Q4's low and high nibbles). The activation vector
// is put in the same order once per call, so each block's integer dot is the same exact
// int32 as in natural order and every result keeps its bits. Q6_K's halves (values 0-15,
// 16-31) are lanes 0 + 2 and 1 + 3.

// Natural positions of the lane order's 32 values (vpermw indices).
static const int16_t lane_order[32] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                                       1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};

// Per-word right shifts per lane: the Q4 nibbles {0, 4, 8, 12}; a field at bit s of each
// byte {s, s, 8 + s, 8 + s} (the words' low bytes, then their high bytes).
#define HONE_SHIFTS(a, b, c, d) {a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b, c, c, c, c, c, c, c, c, d, d, d, d, d, d, d, d}
static const int16_t shifts_nibbles[32] = HONE_SHIFTS(0, 4, 8, 12);
static const int16_t shifts_bytes[9][32] = {HONE_SHIFTS(0, 0, 8, 8), HONE_SHIFTS(1, 1, 9, 9), HONE_SHIFTS(2, 2, 10, 10),
                                            HONE_SHIFTS(3, 3, 11, 11), HONE_SHIFTS(4, 4, 12, 12), HONE_SHIFTS(5, 5, 13, 13),
                                            HONE_SHIFTS(6, 6, 14, 14), HONE_SHIFTS(7, 7, 15, 15), HONE_SHIFTS(8, 8, 0, 0)};
#undef HONE_SHIFTS

// The field of `bits` bits at bit s of each of the 32 bytes at p, as lane-order words.
__attribute__((target("avx512f,avx512bw"), always_inline))
static inline __m512i byte_field(const uint8_t *p, int s, int bits) {
    const __m512i t = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_and_si512(_mm512_srlv_epi16(t, _mm512_loadu_si512(shifts_bytes[s])), _mm512_set1_epi16((short)((1 << bits) - 1)));
}

// The 32 nibbles of the 16 bytes at p (low nibbles values 0-15), as lane-order words.
__attribute__((target("avx512f,avx512bw"), always_inline))
static inline __m512i nibbles(const uint8_t *p) {
    const __m512i t = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
    return _mm512_and_si512(_mm512_srlv_epi16(t, _mm512_loadu_si512(shifts_nibbles)), _mm512_set1_epi16(0x0f));
}

// The types whose 32-value blocks start with their fp16 scale (and Q4_1's, Q5_1's min):
// their scales are read per block; the K-quants' from a super-block's packed scales.
static inline int is_flat_type(int type) { return !is_block32_type(type) || type == HONE_TYPE_Q5_0 || type == HONE_TYPE_Q5_1; }
static inline size_t flat_block_bytes(int type) {
    switch (type) {
    case HONE_TYPE_Q8_0: return sizeof(hone_block_q8_0);
    case HONE_TYPE_Q4_0: return sizeof(hone_block_q4_0);
    case HONE_TYPE_Q4_1: return sizeof(hone_block_q4_1);
    case HONE_TYPE_Q5_0: return sizeof(hone_block_q5_0);
    default: return sizeof(hone_block_q5_1);
    }
}

// The integers of block j of the block (or K-quant super-block) at p, in lane order: the
// values of ints32_avx512's register, permuted by lane_order.
__attribute__((target(HONE_AVX512), always_inline))
static inline __m512i ints32_lanes(int type, const uint8_t *p, int j) {
    switch (type) {
    case HONE_TYPE_Q8_0: {
        // Signed bytes: a word's low byte moved up, then both arithmetic-shifted down.
        const __m512i t = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + offsetof(hone_block_q8_0, qs))));
        return _mm512_srai_epi16(_mm512_sllv_epi16(t, _mm512_loadu_si512(shifts_bytes[8])), 8);
    }
    case HONE_TYPE_Q4_0: return nibbles(p + offsetof(hone_block_q4_0, qs));
    case HONE_TYPE_Q4_1: return nibbles(p + offsetof(hone_block_q4_1, qs));
    case HONE_TYPE_Q5_0:
    case HONE_TYPE_Q5_1: {
        // Bit l of qh is value l's fifth bit: lane order wants its even bits, then its odd.
        const int one = type == HONE_TYPE_Q5_1;
        const uint32_t qh = rd32(p + (one ? offsetof(hone_block_q5_1, qh) : offsetof(hone_block_q5_0, qh)));
        const __mmask32 high = _pext_u32(qh, 0x55555555u) | _pext_u32(qh, 0xaaaaaaaau) << 16;
        const __m512i v = _mm512_or_si512(nibbles(p + (one ? offsetof(hone_block_q5_1, qs) : offsetof(hone_block_q5_0, qs))),
                                          _mm512_maskz_mov_epi16(high, _mm512_set1_epi16(16)));
        return one ? v : _mm512_sub_epi16(v, _mm512_set1_epi16(16));
    }
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K: {
        const int five = type == HONE_TYPE_Q5_K;
        const uint8_t *q = p + (five ? offsetof(hone_block_q5_k, qs) : offsetof(hone_block_q4_k, qs)) + 32 * (j / 2);
        __m512i v = byte_field(q, 4 * (j & 1), 4);
        if (five) v = _mm512_or_si512(v, _mm512_slli_epi16(byte_field(p + offsetof(hone_block_q5_k, qh), j, 1), 4));
        return v;
    }
    default: {
        const hone_block_q6_k *k = (const hone_block_q6_k *)p;
        const int half = j / 4, t = j % 4;
        const __m512i low = byte_field(k->ql + 64 * half + 32 * (t & 1), (t & 2) ? 4 : 0, 4);
        const __m512i high = byte_field(k->qh + 32 * half, 2 * t, 2);
        return _mm512_sub_epi16(_mm512_or_si512(low, _mm512_slli_epi16(high, 4)), _mm512_set1_epi16(32));
    }
    }
}

// Decodes block b of the four rows at w (row_bytes apart) in lane order, prefetching the
// next group's share. K-quants: each super-block's eight scale triples once per row (at
// b % 8 == 0, into `kept`), not per block: the same expressions, so the same floats as
// decode32_avx512's.
__attribute__((target(HONE_AVX512)))
static inline __attribute__((always_inline)) void decode_rows4_avx512(int type, const uint8_t *w, size_t row_bytes, size_t b,
                                                                      size_t step16, float kept[3][4][8], __m512i w16[4],
                                                                      float a_lo[4], float a_hi[4], float c[4]) {
    for (int r = 0; r < 4; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        _mm_prefetch(ahead(row, row_bytes, b, step16), _MM_HINT_T0);
        if (!is_flat_type(type)) {
            const uint8_t *p = block32_base(type, row, b);
            if (b % 8 == 0)
                for (int k = 0; k < 8; k++) block32_scales_with(half_f16c, type, p, (size_t)k, &kept[0][r][k], &kept[1][r][k], &kept[2][r][k]);
            a_lo[r] = kept[0][r][b % 8], a_hi[r] = kept[1][r][b % 8], c[r] = kept[2][r][b % 8];
            w16[r] = ints32_lanes(type, p, (int)(b % 8));
        } else {
            const uint8_t *p = row + b * flat_block_bytes(type);
            a_lo[r] = a_hi[r] = _cvtsh_ss(rd16(p));
            c[r] = type == HONE_TYPE_Q4_1 || type == HONE_TYPE_Q5_1 ? _cvtsh_ss(rd16(p + 2)) : type == HONE_TYPE_Q4_0 ? -8.0f * a_lo[r] : 0;
            w16[r] = ints32_lanes(type, p, 0);
        }
    }
}

// Up to four activation vectors prepared for the few-vector kernel: their values in lane
// order, their block scales, and each block's d·Σq (the tail's factor) computed once; and
// room for a group of rows' fp16 scales (8 per block: four rows' d, then their m).
#define FEW_VECTORS 4
typedef struct {
    int m;
    const int16_t *q[FEW_VECTORS];
    const hone_act_scale *s[FEW_VECTORS];
    const float *ds[FEW_VECTORS];
    uint16_t *scales;
} few_vectors;

static __thread void *few_vectors_room;
static __thread size_t few_vectors_capacity;

__attribute__((target("avx512f,avx512bw")))
static few_vectors prepare_few_vectors(const int16_t *q, size_t q_stride, const hone_act_scale *s, size_t s_stride, int m, size_t n) {
    const size_t blocks = n / 32, per_vector = n * sizeof(int16_t) + blocks * sizeof(float);
    const size_t bytes = FEW_VECTORS * per_vector + blocks * 8 * sizeof(uint16_t);
    if (few_vectors_capacity < bytes) {
        free(few_vectors_room);
        few_vectors_room = malloc(bytes);
        if (!few_vectors_room) abort();
        few_vectors_capacity = bytes;
    }
    few_vectors v = {m, {0}, {0}, {0}, (uint16_t *)((char *)few_vectors_room + FEW_VECTORS * per_vector)};
    const __m512i order = _mm512_loadu_si512(lane_order);
    for (int j = 0; j < m; j++) {
        int16_t *lanes = (int16_t *)((char *)few_vectors_room + (size_t)j * per_vector);
        float *ds = (float *)(lanes + n);
        const int16_t *qj = q + (size_t)j * q_stride;
        const hone_act_scale *sj = s + (size_t)j * s_stride;
        for (size_t b = 0; b < blocks; b++) {
            _mm512_storeu_si512(lanes + 32 * b, _mm512_permutexvar_epi16(order, _mm512_loadu_si512(qj + 32 * b)));
            ds[b] = sj[b].d * (float)sj[b].sum;
        }
        v.q[j] = lanes, v.s[j] = sj, v.ds[j] = ds;
    }
    return v;
}

// Four rows against M (1-4) vectors: each block of the four rows decoded once, then per
// vector four independent chains, the four rows' block sums reduced together (two rounds of
// unpack-and-add leave each 128-bit lane k holding the four rows' sums of its values), so
// the float work is one 4-lane FMA per block. The flat types' fp16 scales are copied row by
// row into groups of four first (scalar loads and stores, no shuffles), the K-quants' scale
// triples computed per super-block into the same shape, so each block's four scales are
// one load.
__attribute__((target(HONE_AVX512), always_inline))
static inline void rows4_few_avx512_body(int type, const uint8_t *w, size_t row_bytes, const few_vectors *v, const int M, size_t n,
                                         float *out, size_t out_stride) {
    const int halves = type == HONE_TYPE_Q6_K, flat = is_flat_type(type);
    const size_t blocks = n / 32, step16 = ahead_step(row_bytes, n);
    uint16_t *scales = v->scales;
    const int with_min = type == HONE_TYPE_Q4_1 || type == HONE_TYPE_Q5_1;
    if (flat) {
        _Static_assert(offsetof(hone_block_q4_1, m) == 2 && offsetof(hone_block_q5_1, m) == 2, "min after the scale");
        const size_t bytes = flat_block_bytes(type);
        for (size_t b = 0; b < blocks; b++)
            for (int r = 0; r < 4; r++) {
                const uint8_t *p = w + (size_t)r * row_bytes + b * bytes;
                scales[8 * b + r] = rd16(p);
                if (with_min) scales[8 * b + 4 + r] = rd16(p + 2);
            }
    }
    float kept[3][8][4];
    __m128 acc[FEW_VECTORS], tail[FEW_VECTORS];
    for (int j = 0; j < M; j++) acc[j] = tail[j] = _mm_setzero_ps();
    for (size_t b = 0; b < blocks; b++) {
        __m128 a_lo, a_hi, c;
        if (flat) {
            a_lo = a_hi = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(scales + 8 * b)));
            c = with_min                 ? _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(scales + 8 * b + 4)))
                : type == HONE_TYPE_Q4_0 ? _mm_mul_ps(_mm_set1_ps(-8.0f), a_lo)
                                         : _mm_setzero_ps();
        } else {
            if (b % 8 == 0)
                for (int r = 0; r < 4; r++) {
                    const uint8_t *p = block32_base(type, w + (size_t)r * row_bytes, b);
                    for (int k = 0; k < 8; k++) block32_scales_with(half_f16c, type, p, (size_t)k, &kept[0][k][r], &kept[1][k][r], &kept[2][k][r]);
                }
            a_lo = _mm_loadu_ps(kept[0][b % 8]), a_hi = _mm_loadu_ps(kept[1][b % 8]), c = _mm_loadu_ps(kept[2][b % 8]);
        }
        __m512i w16[4];
        for (int r = 0; r < 4; r++) {
            const uint8_t *row = w + (size_t)r * row_bytes;
            _mm_prefetch(ahead(row, row_bytes, b, step16), _MM_HINT_T0);
            w16[r] = ints32_lanes(type, flat ? row + b * flat_block_bytes(type) : block32_base(type, row, b), (int)(b % 8));
        }
        for (int j = 0; j < M; j++) {
            const __m512i x = _mm512_loadu_si512(v->q[j] + b * 32);
            __m512i p[4];
            for (int r = 0; r < 4; r++) p[r] = _mm512_madd_epi16(w16[r], x);
            const __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
            const __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
            const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
            // Lanes 0 and 2 hold values 0-15, lanes 1 and 3 values 16-31.
            const __m256i u_01 = _mm512_castsi512_si256(u), u_23 = _mm512_extracti64x4_epi64(u, 1);
            const __m128i lo = _mm_add_epi32(_mm256_castsi256_si128(u_01), _mm256_castsi256_si128(u_23));
            const __m128i hi = _mm_add_epi32(_mm256_extracti128_si256(u_01, 1), _mm256_extracti128_si256(u_23, 1));
            const __m128 dx = _mm_broadcast_ss(&v->s[j][b].d);
            if (halves) {
                acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(lo), _mm_mul_ps(a_lo, dx), acc[j]);
                acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(hi), _mm_mul_ps(a_hi, dx), acc[j]);
            } else {
                acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_add_epi32(lo, hi)), _mm_mul_ps(a_lo, dx), acc[j]);
            }
            tail[j] = _mm_fmadd_ps(c, _mm_broadcast_ss(v->ds[j] + b), tail[j]);
        }
    }
    for (int j = 0; j < M; j++) {
        float four[4];
        _mm_storeu_ps(four, _mm_add_ps(acc[j], tail[j]));
        for (int r = 0; r < 4; r++) out[(size_t)j * out_stride + r] = four[r];
    }
}

// Up to `lanes` (8 or 16) activation vectors laid out for the rows4_many kernels: block b's
// pair p in lane order (its int16 words 2p, 2p+1 as one int32) of vector j at
// pairs[(16b + p)·lanes + j], the block's scale d and d·Σq at d[lanes·b + j] and
// ds[lanes·b + j]; lanes past the group's vectors hold zeros.
typedef struct {
    int32_t *pairs;
    float *d, *ds;
} vector_lanes;

// Per-thread room for vector_lanes (a group is laid out once per call, for all its rows).
static __thread void *vector_lanes_room;
static __thread size_t vector_lanes_capacity;

// Transposes a 16 × 16 matrix of int32 (row i in r[i]): unpacks pair rows, then 64-bit
// halves, then 128-bit lanes.
__attribute__((target("avx512f")))
static inline __attribute__((always_inline)) void transpose16_epi32(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    // u[4i + c], 128-bit lane L: column 4L + c of rows 4i…4i+3.
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        const __m512i w0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88), w1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        r[12 + c] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

__attribute__((target("avx512f,avx512bw")))
static vector_lanes lay_out_vectors(const int16_t *q, size_t q_stride, const hone_act_scale *s, size_t s_stride, int m, int lanes, size_t n) {
    const size_t blocks = n / 32, bytes = blocks * (size_t)lanes * (16 * sizeof(int32_t) + 2 * sizeof(float));
    if (vector_lanes_capacity < bytes) {
        free(vector_lanes_room);
        vector_lanes_room = malloc(bytes);
        if (!vector_lanes_room) abort();
        vector_lanes_capacity = bytes;
    }
    vector_lanes v = {(int32_t *)vector_lanes_room, NULL, NULL};
    v.d = (float *)(v.pairs + blocks * 16 * (size_t)lanes);
    v.ds = v.d + blocks * (size_t)lanes;
    const __m512i order = _mm512_loadu_si512(lane_order);
    for (size_t b = 0; b < blocks; b++) {
        __m512i r[16];
        for (int j = 0; j < 16; j++) r[j] = j < m ? _mm512_permutexvar_epi16(order, _mm512_loadu_si512(q + j * q_stride + b * 32)) : _mm512_setzero_si512();
        transpose16_epi32(r);
        int32_t *out = v.pairs + 16 * b * (size_t)lanes;
        for (int p = 0; p < 16; p++) {
            if (lanes == 16) _mm512_storeu_si512(out + 16 * p, r[p]);
            else _mm256_storeu_si256((__m256i *)(out + 8 * p), _mm512_castsi512_si256(r[p]));
        }
        for (int j = 0; j < lanes; j++) {
            v.d[lanes * b + j] = j < m ? s[j * s_stride + b].d : 0;
            v.ds[lanes * b + j] = j < m ? s[j * s_stride + b].d * (float)s[j * s_stride + b].sum : 0;
        }
    }
    return v;
}

// acc + the int16 pair products of x and the pair at `pair` broadcast to every lane, in one
// instruction (vpdpwssd with an embedded broadcast). Written out because clang, tuning for
// no CPU in particular, splits _mm512_dpwssd_epi32 into vpmaddwd + vpaddd and broadcasts
// into a register first: three instructions where one does.
__attribute__((target("avx512f,avx512vnni")))
static inline __attribute__((always_inline)) __m512i dpwssd_broadcast16(__m512i acc, __m512i x, const int32_t *pair) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*pair));
    return acc;
}
__attribute__((target("avx512f,avx512vl,avx512vnni")))
static inline __attribute__((always_inline)) __m256i dpwssd_broadcast8(__m256i acc, __m256i x, const int32_t *pair) {
    __asm__("vpdpwssd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*pair));
    return acc;
}

// Four rows against up to LANES vectors, one vector per lane: per block, vpdpwssd with the
// row's pair p broadcast (a load, not an ALU op) against the vectors' pair p adds the
// block's products into each vector's lane, in two chains (values 0-15, 16-31) per row
// for eight independent chains; then one convert and FMA for all vectors. Written once
// for 16 lanes (zmm) and 8 (ymm: half the work per row where at most eight vectors run).
// VI/VF: the integer and float vector types; P: the intrinsics' prefix; LOAD_I, ZERO_I,
// DPW: the integer load, zero and dpwssd_broadcast of that width.
#define HONE_ROWS4_MANY(NAME, LANES, VI, VF, P, LOAD_I, ZERO_I, DPW)                                                         \
    __attribute__((target(HONE_AVX512), always_inline))                                                                      \
    static inline void NAME(int type, const uint8_t *w, size_t row_bytes, const vector_lanes *v, int m, size_t n, float *out, \
                            size_t out_stride) {                                                                             \
        const int halves = type == HONE_TYPE_Q6_K;                                                                           \
        const size_t step16 = ahead_step(row_bytes, n);                                                                      \
        float kept[3][4][8];                                                                                                 \
        VF acc[4], tail[4];                                                                                                  \
        for (int r = 0; r < 4; r++) acc[r] = tail[r] = P##_setzero_ps();                                                     \
        for (size_t b = 0; b < n / 32; b++) {                                                                                \
            __m512i w16[4];                                                                                                  \
            float a_lo[4], a_hi[4], c[4];                                                                                    \
            decode_rows4_avx512(type, w, row_bytes, b, step16, kept, w16, a_lo, a_hi, c);                                    \
            int32_t pairs[4][16];                                                                                            \
            for (int r = 0; r < 4; r++) _mm512_storeu_si512(pairs[r], w16[r]);                                               \
            VI sums[4][2];                                                                                                   \
            for (int r = 0; r < 4; r++) sums[r][0] = sums[r][1] = ZERO_I();                                                  \
            const int32_t *x = v->pairs + b * 16 * LANES;                                                                    \
            _Pragma("clang loop unroll(full)") for (int i = 0; i < 8; i++) {                                                 \
                const int p = i < 4 ? i : i + 4; /* pair p of values 0-15 in lane order; p + 4 of values 16-31 */           \
                const VI lo = LOAD_I((const void *)(x + LANES * p)), hi = LOAD_I((const void *)(x + LANES * (p + 4)));       \
                for (int r = 0; r < 4; r++) {                                                                                \
                    sums[r][0] = DPW(sums[r][0], lo, &pairs[r][p]);                                                          \
                    sums[r][1] = DPW(sums[r][1], hi, &pairs[r][p + 4]);                                                      \
                }                                                                                                            \
            }                                                                                                                \
            const VF d = P##_loadu_ps(v->d + LANES * b), ds = P##_loadu_ps(v->ds + LANES * b);                               \
            for (int r = 0; r < 4; r++) {                                                                                    \
                if (halves) {                                                                                                \
                    acc[r] = P##_fmadd_ps(P##_cvtepi32_ps(sums[r][0]), P##_mul_ps(P##_set1_ps(a_lo[r]), d), acc[r]);         \
                    acc[r] = P##_fmadd_ps(P##_cvtepi32_ps(sums[r][1]), P##_mul_ps(P##_set1_ps(a_hi[r]), d), acc[r]);         \
                } else {                                                                                                     \
                    acc[r] = P##_fmadd_ps(P##_cvtepi32_ps(P##_add_epi32(sums[r][0], sums[r][1])),                            \
                                          P##_mul_ps(P##_set1_ps(a_lo[r]), d), acc[r]);                                      \
                }                                                                                                            \
                tail[r] = P##_fmadd_ps(P##_set1_ps(c[r]), ds, tail[r]);                                                      \
            }                                                                                                                \
        }                                                                                                                    \
        for (int r = 0; r < 4; r++) {                                                                                        \
            float result[LANES];                                                                                             \
            P##_storeu_ps(result, P##_add_ps(acc[r], tail[r]));                                                              \
            for (int j = 0; j < m; j++) out[j * out_stride + r] = result[j];                                                 \
        }                                                                                                                    \
    }
__attribute__((target("avx2"), always_inline)) static inline __m256i load_i256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
__attribute__((target("avx512f"), always_inline)) static inline __m512i load_i512(const void *p) { return _mm512_loadu_si512(p); }
__attribute__((target("avx2"), always_inline)) static inline __m256i zero_i256(void) { return _mm256_setzero_si256(); }
__attribute__((target("avx512f"), always_inline)) static inline __m512i zero_i512(void) { return _mm512_setzero_si512(); }
HONE_ROWS4_MANY(rows4_many16_body, 16, __m512i, __m512, _mm512, load_i512, zero_i512, dpwssd_broadcast16)
HONE_ROWS4_MANY(rows4_many8_body, 8, __m256i, __m256, _mm256, load_i256, zero_i256, dpwssd_broadcast8)

// One copy of each kernel per type, compiled without the switches on `type`.
typedef float (*row_fn)(const uint8_t *, const int16_t *, const hone_act_scale *, size_t);
typedef void (*rows4_few_fn)(const uint8_t *, size_t, const few_vectors *, size_t, float *, size_t);
typedef void (*rows4_many_fn)(const uint8_t *, size_t, const vector_lanes *, int, size_t, float *, size_t);
typedef struct {
    row_fn row;
    rows4_few_fn rows4_few;
    rows4_many_fn rows4_many16, rows4_many8;
} avx512_kernels;

#define HONE_AVX512_FOR(TYPE, NAME)                                                                                           \
    __attribute__((target(HONE_AVX512))) static float NAME##_row(const uint8_t *w, const int16_t *q, const hone_act_scale *s, \
                                                                 size_t n) {                                                  \
        return dot_row_avx512_body(TYPE, w, q, s, n);                                                                         \
    }                                                                                                                         \
    __attribute__((target(HONE_AVX512))) static void NAME##_rows4_few(const uint8_t *w, size_t row_bytes,                    \
                                                                      const few_vectors *v, size_t n, float *out,             \
                                                                      size_t out_stride) {                                    \
        switch (v->m) { /* one copy per count, so the vectors' chains stay in registers */                               \
        case 1: rows4_few_avx512_body(TYPE, w, row_bytes, v, 1, n, out, out_stride); return;                                  \
        case 2: rows4_few_avx512_body(TYPE, w, row_bytes, v, 2, n, out, out_stride); return;                                  \
        case 3: rows4_few_avx512_body(TYPE, w, row_bytes, v, 3, n, out, out_stride); return;                                  \
        default: rows4_few_avx512_body(TYPE, w, row_bytes, v, 4, n, out, out_stride); return;                                 \
        }                                                                                                                     \
    }                                                                                                                         \
    __attribute__((target(HONE_AVX512))) static void NAME##_rows4_many16(const uint8_t *w, size_t row_bytes,                 \
                                                                         const vector_lanes *v, int m, size_t n, float *out,      \
                                                                         size_t out_stride) {                                     \
        rows4_many16_body(TYPE, w, row_bytes, v, m, n, out, out_stride);                                                      \
    }                                                                                                                         \
    __attribute__((target(HONE_AVX512))) static void NAME##_rows4_many8(const uint8_t *w, size_t row_bytes,                  \
                                                                        const vector_lanes *v, int m, size_t n, float *out,       \
                                                                        size_t out_stride) {                                      \
        rows4_many8_body(TYPE, w, row_bytes, v, m, n, out, out_stride);                                                       \
    }
HONE_AVX512_FOR(HONE_TYPE_Q8_0, q8_0_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q4_0, q4_0_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q4_1, q4_1_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q5_0, q5_0_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q5_1, q5_1_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q4_K, q4_k_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q5_K, q5_k_avx512)
HONE_AVX512_FOR(HONE_TYPE_Q6_K, q6_k_avx512)

// The AVX-512 kernels of a type; all NULL for a type without them.
static avx512_kernels kernels_avx512(int type) {
#define HONE_KERNELS_OF(NAME) return (avx512_kernels){NAME##_row, NAME##_rows4_few, NAME##_rows4_many16, NAME##_rows4_many8}
    switch (type) {
    case HONE_TYPE_Q8_0: HONE_KERNELS_OF(q8_0_avx512);
    case HONE_TYPE_Q4_0: HONE_KERNELS_OF(q4_0_avx512);
    case HONE_TYPE_Q4_1: HONE_KERNELS_OF(q4_1_avx512);
    case HONE_TYPE_Q5_0: HONE_KERNELS_OF(q5_0_avx512);
    case HONE_TYPE_Q5_1: HONE_KERNELS_OF(q5_1_avx512);
    case HONE_TYPE_Q4_K: HONE_KERNELS_OF(q4_k_avx512);
    case HONE_TYPE_Q5_K: HONE_KERNELS_OF(q5_k_avx512);
    case HONE_TYPE_Q6_K: HONE_KERNELS_OF(q6_k_avx512);
    default: return (avx512_kernels){NULL, NULL, NULL, NULL};
    }
#undef HONE_KERNELS_OF
}

static float dot_q_avx512(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    avx512_kernels k = kernels_avx512(type);
    return k.row ? k.row((const uint8_t *)w, q, s, n) : dot_q_ref(type, w, q, s, n);
}

// The rows of hone_dot_q_rows_multi at this level. Vectors go in groups of up to sixteen:
// nine or more through rows4_many16, five to eight through rows4_many8 (each costs the
// same per row whatever its group's count), up to four through rows4_few, whose cost grows
// with the count.
static void rows_multi_avx512(int type, const uint8_t *p, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
                              const hone_act_scale *scales, size_t scales_stride, int m, size_t n, float *out, size_t out_stride) {
    avx512_kernels k = kernels_avx512(type);
    const int whole = k.rows4_few ? rows / 4 * 4 : 0;
    for (int j = 0; j < m; j += 16) {
        const int group = m - j < 16 ? m - j : 16;
        const int16_t *qj = q + j * q_stride;
        const hone_act_scale *sj = scales + j * scales_stride;
        float *oj = out + j * out_stride;
        if (group > FEW_VECTORS) {
            const int lanes = group > 8 ? 16 : 8;
            const rows4_many_fn many = lanes == 16 ? k.rows4_many16 : k.rows4_many8;
            const vector_lanes v = lay_out_vectors(qj, q_stride, sj, scales_stride, group, lanes, n);
            for (int r = 0; r < whole; r += 4) many(p + (size_t)r * row_bytes, row_bytes, &v, group, n, oj + r, out_stride);
        } else if (whole > 0) {
            const few_vectors v = prepare_few_vectors(qj, q_stride, sj, scales_stride, group, n);
            for (int r = 0; r < whole; r += 4) k.rows4_few(p + (size_t)r * row_bytes, row_bytes, &v, n, oj + r, out_stride);
        }
    }
    for (int r = whole; r < rows; r++)
        for (int j = 0; j < m; j++)
            out[j * out_stride + r] = dot_q_avx512(type, p + (size_t)r * row_bytes, q + j * q_stride, scales + j * scales_stride, n);
}
#endif

#ifdef HONE_X86
// One copy of a four-row kernel per type (`BODY`, compiled for `TARGET`), so each type's
// decode is compiled without the switches on `type` (measured: the generic copy ran Q5_0
// at half Q4_1's speed).
typedef void (*rows4_fn)(const uint8_t *, size_t, const int16_t *, size_t, const hone_act_scale *, size_t, int, size_t, float *, size_t);
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

static rows4_fn rows4_avx2(int type) {
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

// Whether one vector over a long span of rows (the output head's parts) goes row by row or
// through the level's four-row kernels. Which is faster depends on the machine: on AMD EPYC
// (Zen 4) the head streamed at ~33 GB/s row by row and ~20 four rows at a time; on Intel
// Sapphire Rapids (this project's VMs) it is the other way round, 13.5 against 19.5–21.8 GB/s
// (`honebench profile`, decode). So each thread times its first long spans both ways
// (alternately, SPAN_TRIALS each, the best of each per byte) and keeps the faster. The two
// give bit-identical results: the choice changes only the speed.
#define SPAN_TRIALS 4
typedef struct {
    int calls;            // long spans timed so far (both ways together)
    int row_by_row;       // the choice, once calls reaches 2·SPAN_TRIALS
    double best[2];       // seconds per byte: [0] four rows at a time, [1] row by row
} span_choice;
static _Thread_local span_choice span = {0, 0, {1e30, 1e30}};

void hone_long_spans_fix(int row_by_row) {
    span.calls = 2 * SPAN_TRIALS;
    span.row_by_row = row_by_row != 0;
}

static double span_clock(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void dot_rows_multi(int type, const uint8_t *p, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
                           const hone_act_scale *scales, size_t scales_stride, int m, size_t n, float *out, size_t out_stride,
                           int row_by_row);

void hone_dot_q_rows_multi(int type, const void *w, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
                           const hone_act_scale *scales, size_t scales_stride, int m, size_t n, float *out, size_t out_stride) {
    const uint8_t *p = (const uint8_t *)w;
    const int long_span = m == 1 && (size_t)rows * row_bytes >= ((size_t)256 << 10);
    if (!long_span || span.calls >= 2 * SPAN_TRIALS) {
        dot_rows_multi(type, p, row_bytes, rows, q, q_stride, scales, scales_stride, m, n, out, out_stride, long_span && span.row_by_row);
        return;
    }
    const int way = span.calls % 2;
    const double start = span_clock();
    dot_rows_multi(type, p, row_bytes, rows, q, q_stride, scales, scales_stride, m, n, out, out_stride, way);
    const double perByte = (span_clock() - start) / ((double)rows * (double)row_bytes);
    if (perByte < span.best[way]) span.best[way] = perByte;
    if (++span.calls == 2 * SPAN_TRIALS) span.row_by_row = span.best[1] < span.best[0];
}

static void dot_rows_multi(int type, const uint8_t *p, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
                           const hone_act_scale *scales, size_t scales_stride, int m, size_t n, float *out, size_t out_stride,
                           int row_by_row) {
    int r = 0;
#ifdef HONE_X86
    const int level = row_by_row ? 0 : hone_kernels_level();
    if (level == 2 && kernels_avx512(type).row) {
        rows_multi_avx512(type, p, row_bytes, rows, q, q_stride, scales, scales_stride, m, n, out, out_stride);
        return;
    } else if (level == 1 && rows4_avx2(type)) {
        rows4_fn rows4 = rows4_avx2(type);
        for (; r + 4 <= rows; r += 4) rows4(p + (size_t)r * row_bytes, row_bytes, q, q_stride, scales, scales_stride, m, n, out + r, out_stride);
    }
#endif
    for (; r < rows; r++)
        for (int j = 0; j < m; j++)
            out[j * out_stride + r] = hone_dot_q(type, p + (size_t)r * row_bytes, q + j * q_stride, scales + j * scales_stride, n);
}

void hone_dot_q_rows(int type, const void *w, size_t row_bytes, int rows, const int16_t *q,
                     const hone_act_scale *scales, size_t n, float *out) {
    hone_dot_q_rows_multi(type, w, row_bytes, rows, q, n, scales, n / 32, 1, n, out, (size_t)rows);
}

int hone_dequantize(int type, const void *src, float *dst, size_t n) {
#ifdef HONE_X86
    if (has_kernels(type) && hone_kernels_level() >= 1) {
        if (hone_kernels_level() == 2) dequantize_avx512(type, (const uint8_t *)src, dst, n);
        else dequantize_avx2(type, (const uint8_t *)src, dst, n);
        return 0;
    }
#endif
    return hone_dequantize_reference(type, src, dst, n);
}
