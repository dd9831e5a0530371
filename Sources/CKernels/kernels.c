// Dot-product kernels: the float dot, activation quantization, the quantized dot's
// reference and its dispatch to the level in use (dot_avx2.c, dot_avx512.c), the
// dequantizers. Reference versions are plain C; fast versions use per-function target
// attributes so the library needs no global -march and runs on any x86-64 (or other) CPU,
// picking the best variant once at run time (levels.c).
#include "blocks.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

// Reference: integer dot per block, then scaled. Weight value = d·q (Q8_0), d·(q-8)
// (Q4_0), d·q + m (Q4_1).
float hone_dot_q_reference(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
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

#endif

float hone_dot_q(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
#ifdef HONE_X86
    switch (hone_kernels_level()) {
    case 2: return hone_dot_q_avx512(type, w, q, s, n);
    case 1: return hone_dot_q_avx2(type, w, q, s, n);
    default: break;
    }
#endif
    return hone_dot_q_reference(type, w, q, s, n);
}

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
    if (level == 2 && hone_avx512_reads(type)) {
        hone_rows_multi_avx512(type, p, row_bytes, rows, q, q_stride, scales, scales_stride, m, n, out, out_stride);
        return;
    } else if (level == 1 && hone_rows4_avx2(type)) {
        rows4_fn rows4 = hone_rows4_avx2(type);
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
