// Element-wise float kernels of the forward and backward passes (the exponential, SwiGLU)
// and decode attention over a KV cache. Swift's loops over them called glibc's expf one
// value at a time: SwiGLU and attention were ~20% of a 16-sequence decode step (`honebench
// profile`, decode16).
//
// The exponential is one algorithm at every level (Cephes' expf: n = rint(x·log2 e), a
// two-part reduction by n·ln 2 and a degree-6 polynomial, each step an IEEE operation or a
// fused multiply-add), so the scalar twin and the 8- and 16-lane versions give the same bits
// and SwiGLU's results do not depend on the kernel level. Within ~1 ulp of expf; inputs are
// clamped to [-87, 88] (results from ~1.6e-38 to ~1.65e38): no infinities or subnormals.
#include "CKernels.h"
#include <math.h>
#include <stddef.h>

// No implicit fused multiply-adds: the scalar twins run inside the vector functions too (for
// the tails), where the compiler could otherwise fuse a·b + c that the reference rounds twice.
#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)
#include <immintrin.h>
#define HONE_X86 1
#endif

#define EXP_LO -87.0f
#define EXP_HI 88.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

// The scalar twin. The clamps are written as the vector max/min read (the second operand
// when either is NaN), so NaN passes through both alike. Inlined into each level's code,
// where `fmaf` is one instruction; the reference level calls libm's, which is exact too.
static inline __attribute__((always_inline)) float exp_one(float x) {
    x = EXP_LO > x ? EXP_LO : x;
    x = EXP_HI < x ? EXP_HI : x;
    const float n = rintf(x * EXP_LOG2E);
    float r = fmaf(n, -EXP_C1, x);
    r = fmaf(n, -EXP_C2, r);
    float y = EXP_P0;
    y = fmaf(y, r, EXP_P1);
    y = fmaf(y, r, EXP_P2);
    y = fmaf(y, r, EXP_P3);
    y = fmaf(y, r, EXP_P4);
    y = fmaf(y, r, EXP_P5);
    y = fmaf(y, r * r, r) + 1.0f;
    union {
        uint32_t u;
        float f;
    } scale = {.u = (uint32_t)((int32_t)n + 127) << 23};
    return y * scale.f;
}

float hone_exp(float x) { return exp_one(x); }

static inline __attribute__((always_inline)) float silu_times(float g, float u) { return g / (1.0f + exp_one(-g)) * u; }

#ifdef HONE_X86
// exp_one's steps on a vector of the level's lanes. ROUND is the level's round-to-nearest
// (rintf's rounding), CAST its integer-to-float bit cast.
#define HONE_EXP_VEC(NAME, TARGET, VEC, VECI, P, ROUND, CAST)                                                     \
    __attribute__((target(TARGET))) static inline VEC NAME(VEC x) {                                               \
        x = P##_max_ps(P##_set1_ps(EXP_LO), x);                                                                   \
        x = P##_min_ps(P##_set1_ps(EXP_HI), x);                                                                   \
        const VEC n = ROUND(P##_mul_ps(x, P##_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); \
        VEC r = P##_fnmadd_ps(n, P##_set1_ps(EXP_C1), x);                                                         \
        r = P##_fnmadd_ps(n, P##_set1_ps(EXP_C2), r);                                                             \
        VEC y = P##_set1_ps(EXP_P0);                                                                              \
        y = P##_fmadd_ps(y, r, P##_set1_ps(EXP_P1));                                                              \
        y = P##_fmadd_ps(y, r, P##_set1_ps(EXP_P2));                                                              \
        y = P##_fmadd_ps(y, r, P##_set1_ps(EXP_P3));                                                              \
        y = P##_fmadd_ps(y, r, P##_set1_ps(EXP_P4));                                                              \
        y = P##_fmadd_ps(y, r, P##_set1_ps(EXP_P5));                                                              \
        y = P##_add_ps(P##_fmadd_ps(y, P##_mul_ps(r, r), r), P##_set1_ps(1.0f));                                  \
        const VECI scale = P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(n), P##_set1_epi32(127)), 23);            \
        return P##_mul_ps(y, CAST(scale));                                                                        \
    }
HONE_EXP_VEC(exp8, "avx2,fma", __m256, __m256i, _mm256, _mm256_round_ps, _mm256_castsi256_ps)
HONE_EXP_VEC(exp16, "avx512f", __m512, __m512i, _mm512, _mm512_roundscale_ps, _mm512_castsi512_ps)

__attribute__((target("avx2,fma"))) static void swiglu_avx2(const float *gate, const float *up, size_t n, float *out) {
    size_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp8(_mm256_xor_ps(g, sign));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = silu_times(gate[i], up[i]);
}

__attribute__((target("avx512f,fma"))) static void swiglu_avx512(const float *gate, const float *up, size_t n, float *out) {
    size_t i = 0;
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i);
        const __m512 e = exp16(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_castps_si512(sign))));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = silu_times(gate[i], up[i]);
}

__attribute__((target("avx2,fma"))) static void exp_shifted_avx2(float *x, size_t n, float shift) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(shift))));
    for (; i < n; i++) x[i] = exp_one(x[i] - shift);
}

__attribute__((target("avx512f,fma"))) static void exp_shifted_avx512(float *x, size_t n, float shift) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(shift))));
    for (; i < n; i++) x[i] = exp_one(x[i] - shift);
}
#endif

void hone_swiglu(const float *gate, const float *up, size_t n, float *out) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: swiglu_avx512(gate, up, n, out); return;
    case 1: swiglu_avx2(gate, up, n, out); return;
    default: break;
    }
#endif
    for (size_t i = 0; i < n; i++) out[i] = silu_times(gate[i], up[i]);
}

static inline __attribute__((always_inline)) void swiglu_backward_one(const float *dout, const float *gate, const float *up, size_t i,
                                                                       float *dgate, float *dup) {
    const float g = gate[i], sig = 1.0f / (1.0f + exp_one(-g));
    dup[i] = dout[i] * g * sig;
    dgate[i] = dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
}

#ifdef HONE_X86
// The scalar twin's operations in its order, eight or sixteen values at a time.
__attribute__((target("avx2,fma"))) static void swiglu_backward_avx2(const float *dout, const float *gate, const float *up, size_t n,
                                                                       float *dgate, float *dup) {
    size_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i), d = _mm256_loadu_ps(dout + i);
        const __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_xor_ps(g, sign))));
        _mm256_storeu_ps(dup + i, _mm256_mul_ps(_mm256_mul_ps(d, g), sig));
        const __m256 t = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(up + i)), sig);
        _mm256_storeu_ps(dgate + i, _mm256_mul_ps(t, _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, sig)))));
    }
    for (; i < n; i++) swiglu_backward_one(dout, gate, up, i, dgate, dup);
}

__attribute__((target("avx512f,fma"))) static void swiglu_backward_avx512(const float *dout, const float *gate, const float *up, size_t n,
                                                                            float *dgate, float *dup) {
    size_t i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i), d = _mm512_loadu_ps(dout + i);
        const __m512 minus = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32((int)0x80000000)));
        const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(minus)));
        _mm512_storeu_ps(dup + i, _mm512_mul_ps(_mm512_mul_ps(d, g), sig));
        const __m512 t = _mm512_mul_ps(_mm512_mul_ps(d, _mm512_loadu_ps(up + i)), sig);
        _mm512_storeu_ps(dgate + i, _mm512_mul_ps(t, _mm512_add_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, sig)))));
    }
    for (; i < n; i++) swiglu_backward_one(dout, gate, up, i, dgate, dup);
}
#endif

void hone_swiglu_backward(const float *dout, const float *gate, const float *up, size_t n, float *dgate, float *dup) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: swiglu_backward_avx512(dout, gate, up, n, dgate, dup); return;
    case 1: swiglu_backward_avx2(dout, gate, up, n, dgate, dup); return;
    default: break;
    }
#endif
    for (size_t i = 0; i < n; i++) swiglu_backward_one(dout, gate, up, i, dgate, dup);
}

// x[i] = exp(x[i] - shift): softmax's exponentials, the same bits at every level.
static void exp_shifted(float *x, size_t n, float shift) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: exp_shifted_avx512(x, n, shift); return;
    case 1: exp_shifted_avx2(x, n, shift); return;
    default: break;
    }
#endif
    for (size_t i = 0; i < n; i++) x[i] = exp_one(x[i] - shift);
}

void hone_softmax(float *x, size_t n) {
    if (n == 0) return;
    float top = x[0];
    for (size_t i = 1; i < n; i++) top = x[i] > top ? x[i] : top;
    exp_shifted(x, n, top);
    // Summed in order, then normalized: the same sum at every level.
    float sum = 0;
    for (size_t i = 0; i < n; i++) sum += x[i];
    for (size_t i = 0; i < n; i++) x[i] /= sum;
}

// ---------------------------------------------------------------- decode attention

// out[e] = Σ_t p[t] · v_t[e] for e in from..<d, plainly: the reference, and the part of a
// head too short for a level's vector loop.
static void weighted_plain(const float *p, const float *values, size_t stride, int length, int from, int d, float *out) {
    for (int e = from; e < d; e++) out[e] = 0;
    for (int t = 0; t < length; t++)
        for (int e = from; e < d; e++) out[e] += p[t] * values[t * stride + e];
}

// out = Σ_t p[t] · v_t over the D values of one head, four vectors of the level's lanes at
// a time (SmolLM2's D of 64 is one pass at AVX-512, two at AVX2), the rest plainly.
#ifdef HONE_X86
#define HONE_WEIGHTED_ROWS(NAME, TARGET, LANES, VEC, P)                                                                       \
    __attribute__((target(TARGET))) static void NAME(const float *p, const float *values, size_t stride, int length, int d,    \
                                                     float *out) {                                                            \
        int c = 0;                                                                                                            \
        for (; c + 4 * LANES <= d; c += 4 * LANES) {                                                                           \
            VEC a0 = P##_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                                             \
            for (int t = 0; t < length; t++) {                                                                                \
                const float *v = values + t * stride + c;                                                                     \
                const VEC pt = P##_set1_ps(p[t]);                                                                             \
                a0 = P##_fmadd_ps(pt, P##_loadu_ps(v), a0);                                                                   \
                a1 = P##_fmadd_ps(pt, P##_loadu_ps(v + LANES), a1);                                                           \
                a2 = P##_fmadd_ps(pt, P##_loadu_ps(v + 2 * LANES), a2);                                                       \
                a3 = P##_fmadd_ps(pt, P##_loadu_ps(v + 3 * LANES), a3);                                                       \
            }                                                                                                                 \
            P##_storeu_ps(out + c, a0);                                                                                       \
            P##_storeu_ps(out + c + LANES, a1);                                                                               \
            P##_storeu_ps(out + c + 2 * LANES, a2);                                                                           \
            P##_storeu_ps(out + c + 3 * LANES, a3);                                                                           \
        }                                                                                                                     \
        if (c < d) weighted_plain(p, values, stride, length, c, d, out);                                                      \
    }
HONE_WEIGHTED_ROWS(weighted_rows_avx2, "avx2,fma", 8, __m256, _mm256)
HONE_WEIGHTED_ROWS(weighted_rows_avx512, "avx512f,fma", 16, __m512, _mm512)
#endif

static void weighted_rows(const float *p, const float *values, size_t stride, int length, int d, float *out) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: weighted_rows_avx512(p, values, stride, length, d, out); return;
    case 1: weighted_rows_avx2(p, values, stride, length, d, out); return;
    default: break;
    }
#endif
    weighted_plain(p, values, stride, length, 0, d, out);
}

#ifdef HONE_X86
// scores[g·length + t] = (q_g · k_t) · scale for a head width of 64 and up to four heads a
// group: the group's queries stay in registers and each key is read once for all of them.
__attribute__((target("avx512f,fma"))) static void scores64_avx512(const float *q, int group, const float *keys, size_t stride,
                                                                     int length, float scale, float *scores) {
    __m512 qv[4][4];
    for (int g = 0; g < group; g++)
        for (int c = 0; c < 4; c++) qv[g][c] = _mm512_loadu_ps(q + g * 64 + 16 * c);
    for (int t = 0; t < length; t++) {
        const float *k = keys + (size_t)t * stride;
        const __m512 k0 = _mm512_loadu_ps(k), k1 = _mm512_loadu_ps(k + 16), k2 = _mm512_loadu_ps(k + 32), k3 = _mm512_loadu_ps(k + 48);
        for (int g = 0; g < group; g++) {
            __m512 a = _mm512_fmadd_ps(qv[g][1], k1, _mm512_mul_ps(qv[g][0], k0));
            a = _mm512_fmadd_ps(qv[g][3], k3, _mm512_fmadd_ps(qv[g][2], k2, a));
            scores[g * length + t] = _mm512_reduce_add_ps(a) * scale;
        }
    }
}

// scores64_avx512 for AVX2: the key in registers, the queries read from L1.
__attribute__((target("avx2,fma"))) static void scores64_avx2(const float *q, int group, const float *keys, size_t stride, int length,
                                                                float scale, float *scores) {
    for (int t = 0; t < length; t++) {
        const float *k = keys + (size_t)t * stride;
        __m256 kv[8];
        for (int c = 0; c < 8; c++) kv[c] = _mm256_loadu_ps(k + 8 * c);
        for (int g = 0; g < group; g++) {
            const float *qg = q + g * 64;
            __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qg), kv[0]), b = _mm256_mul_ps(_mm256_loadu_ps(qg + 8), kv[1]);
            for (int c = 2; c < 8; c += 2) {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(qg + 8 * c), kv[c], a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(qg + 8 * c + 8), kv[c + 1], b);
            }
            a = _mm256_add_ps(a, b);
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            scores[g * length + t] = _mm_cvtss_f32(h) * scale;
        }
    }
}
#endif

void hone_attend_cached(const float *q, int group, int d, const float *keys, const float *values, size_t stride, int length,
                        float scale, float *scores, float *out) {
#ifdef HONE_X86
    const int level = d == 64 && group <= 4 ? hone_kernels_level() : 0;
    if (level == 2) {
        scores64_avx512(q, group, keys, stride, length, scale, scores);
    } else if (level == 1) {
        scores64_avx2(q, group, keys, stride, length, scale, scores);
    } else
#endif
    for (int t = 0; t < length; t++)
        for (int g = 0; g < group; g++) scores[g * length + t] = hone_dot_f32(q + g * d, keys + (size_t)t * stride, (size_t)d) * scale;
    for (int g = 0; g < group; g++) {
        float *s = scores + g * length;
        hone_softmax(s, (size_t)length);
        weighted_rows(s, values, stride, length, d, out + g * d);
    }
}

float hone_log_sum_exp(const float *x, size_t n) {
    if (n == 0) return -INFINITY;
    float top = x[0];
    for (size_t i = 1; i < n; i++) top = x[i] > top ? x[i] : top;
    // A chunk at a time through the level's exponential, summed in order in double.
    float chunk[256];
    double sum = 0;
    for (size_t i = 0; i < n; i += 256) {
        const size_t m = n - i < 256 ? n - i : 256;
        for (size_t j = 0; j < m; j++) chunk[j] = x[i + j];
        exp_shifted(chunk, m, top);
        for (size_t j = 0; j < m; j++) sum += chunk[j];
    }
    return top + (float)log(sum);
}
