// The LoRA update of inference rows, y += scale · B·(A·x), one row at a time. Each row went
// through two OpenBLAS products per adapted matrix: ~6 700 calls a 16-sequence decode step,
// 20.5 of its 55.8 ms (`honebench profile`, decode16lora, Intel avx512). Here every dot
// product is one fixed sequence of operations (`dot16`), so a row's result has the same bits
// at every level and in any call: a sequence's tokens do not depend on what it is batched with.
#include "CKernels.h"
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

// The reference rounds each operation as written; the vector forms fuse only where it fuses.
#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)
#include <immintrin.h>
#define HONE_X86 1
#endif

// dot16(a, b, n) = Σ a[i]·b[i] as sixteen lanes: lane l accumulates the i ≡ l (mod 16) by
// fused multiply-adds in order over n zero-padded to a multiple of 16; then the lanes are
// summed pairwise, s[l] + s[l + 8], + 4, + 2, + 1. The scalar twin:
static float dot16_plain(const float *a, const float *b, size_t n) {
    float s[16] = {0};
    for (size_t i = 0; i < n; i += 16)
        for (size_t l = 0; l < 16; l++) s[l] = fmaf(i + l < n ? a[i + l] : 0, i + l < n ? b[i + l] : 0, s[l]);
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) s[l] = s[l] + s[l + w];
    return s[0];
}

#ifdef HONE_X86
// dot16's sixteen lanes before the pairwise sum: one register, or two (lanes 0–7, 8–15).
__attribute__((target("avx512f"))) static inline __m512 lanes16_avx512(const float *a, const float *b, size_t n) {
    __m512 s = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s);
    }
    return s;
}

// The lanes of sixteen dot16 accumulators summed pairwise at once: lane j of the result is
// accumulator j's sum. Each step adds lanes l and l + w of every accumulator, as dot16 does.
__attribute__((target("avx512f"))) static inline __m512 sums16_avx512(const __m512 *s) {
    __m512 p[8], q[4], r[2];
    for (int k = 0; k < 8; k++)   // + 8: accumulators 2k, 2k+1 as 128-bit blocks (lanes 0–3, 4–7) × 2
        p[k] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * k], s[2 * k + 1], 0x44), _mm512_shuffle_f32x4(s[2 * k], s[2 * k + 1], 0xEE));
    for (int k = 0; k < 4; k++)   // + 4: block b holds accumulator 4k + b
        q[k] = _mm512_add_ps(_mm512_shuffle_f32x4(p[2 * k], p[2 * k + 1], 0x88), _mm512_shuffle_f32x4(p[2 * k], p[2 * k + 1], 0xDD));
    for (int k = 0; k < 2; k++)   // + 2: block b holds accumulators 8k + b, 8k + 4 + b (two lanes each)
        r[k] = _mm512_add_ps(_mm512_shuffle_ps(q[2 * k], q[2 * k + 1], 0x44), _mm512_shuffle_ps(q[2 * k], q[2 * k + 1], 0xEE));
    // + 1: block b, lane k holds accumulator 4k + b.
    const __m512 t = _mm512_add_ps(_mm512_shuffle_ps(r[0], r[1], 0x88), _mm512_shuffle_ps(r[0], r[1], 0xDD));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), t);
}

// lanes16_avx512 of x with four rows at once (four independent chains; long rows such as
// A's were bound by one chain's latency).
__attribute__((target("avx512f"))) static inline void lanes16x4_avx512(const float *x, const float *rows, size_t stride, size_t n,
                                                                       __m512 *s) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const float *r0 = rows, *r1 = rows + stride, *r2 = rows + 2 * stride, *r3 = rows + 3 * stride;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x + i);
        s0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(r0 + i), s0);
        s1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(r1 + i), s1);
        s2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(r2 + i), s2);
        s3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(r3 + i), s3);
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        s0 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r0 + i), s0);
        s1 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r1 + i), s1);
        s2 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r2 + i), s2);
        s3 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r3 + i), s3);
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}

// out[j] = dot16(x, rows + j·stride, n) for j < count (count ≤ 16).
__attribute__((target("avx512f"))) static void dots_avx512(const float *x, const float *rows, size_t stride, size_t n, int count,
                                                           float *out) {
    __m512 s[16];
    int j = 0;
    for (; j + 4 <= count; j += 4) lanes16x4_avx512(x, rows + (size_t)j * stride, stride, n, s + j);
    for (; j < 16; j++) s[j] = j < count ? lanes16_avx512(x, rows + (size_t)j * stride, n) : _mm512_setzero_ps();
    const __m512 sums = sums16_avx512(s);
    _mm512_mask_storeu_ps(out, (__mmask16)((1u << count) - 1), sums);
}

// dots_avx512 of four rows of x (stride ldx) against the same `count` rows of A: out[j·count
// + r] = dot16(x_j, A_r, n). Each load of A serves the four rows (A's rows came from L2 once
// per row); each (row, r) is the chain and sum it has alone.
__attribute__((target("avx512f"))) static void dots4_avx512(const float *x, size_t ldx, const float *a, size_t n, int count,
                                                            float *out) {
    for (int r0 = 0; r0 < count; r0 += 16) {
        __m512 acc[4][16];
        const int c = count - r0 < 16 ? count - r0 : 16;
        for (int r = 0; r < 16; r += 4) {
            __m512 s[4][4];
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 4; k++) s[j][k] = _mm512_setzero_ps();
            if (r < c) {
                const float *ar[4];
                for (int k = 0; k < 4; k++) ar[k] = a + (size_t)(r0 + (r + k < c ? r + k : r)) * n;
                size_t i = 0;
                for (; i + 16 <= n; i += 16) {
                    __m512 av[4], xv[4];
                    for (int k = 0; k < 4; k++) av[k] = _mm512_loadu_ps(ar[k] + i);
                    for (int j = 0; j < 4; j++) xv[j] = _mm512_loadu_ps(x + j * ldx + i);
                    for (int j = 0; j < 4; j++)
                        for (int k = 0; k < 4; k++) s[j][k] = _mm512_fmadd_ps(xv[j], av[k], s[j][k]);
                }
                if (i < n) {
                    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
                    __m512 av[4], xv[4];
                    for (int k = 0; k < 4; k++) av[k] = _mm512_maskz_loadu_ps(m, ar[k] + i);
                    for (int j = 0; j < 4; j++) xv[j] = _mm512_maskz_loadu_ps(m, x + j * ldx + i);
                    for (int j = 0; j < 4; j++)
                        for (int k = 0; k < 4; k++) s[j][k] = _mm512_fmadd_ps(xv[j], av[k], s[j][k]);
                }
            }
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 4; k++) acc[j][r + k] = r + k < c ? s[j][k] : _mm512_setzero_ps();
        }
        for (int j = 0; j < 4; j++) {
            const __m512 sums = sums16_avx512(acc[j]);
            _mm512_mask_storeu_ps(out + j * count + r0, (__mmask16)((1u << c) - 1), sums);
        }
    }
}

__attribute__((target("avx2,fma"))) static inline __m256 lanes16_avx2(const float *a, const float *b, size_t n) {
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    if (i < n) {
        float ta[16] = {0}, tb[16] = {0};
        for (size_t l = 0; i + l < n; l++) ta[l] = a[i + l], tb[l] = b[i + l];
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(ta), _mm256_loadu_ps(tb), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(ta + 8), _mm256_loadu_ps(tb + 8), hi);
    }
    return _mm256_add_ps(lo, hi);   // + 8
}

// sums16_avx512 for eight accumulators already summed + 8 (lanes 0–7 each).
__attribute__((target("avx2,fma"))) static inline __m256 sums8_avx2(const __m256 *s) {
    __m256 w[4], x[2];
    for (int k = 0; k < 4; k++)   // + 4: halves hold accumulators 2k, 2k+1
        w[k] = _mm256_add_ps(_mm256_permute2f128_ps(s[2 * k], s[2 * k + 1], 0x20), _mm256_permute2f128_ps(s[2 * k], s[2 * k + 1], 0x31));
    for (int k = 0; k < 2; k++)   // + 2: half h holds accumulators 4k + h, 4k + 2 + h
        x[k] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * k], w[2 * k + 1], 0x44), _mm256_shuffle_ps(w[2 * k], w[2 * k + 1], 0xEE));
    // + 1: half h, lane k holds accumulator 2k + h.
    const __m256 t = _mm256_add_ps(_mm256_shuffle_ps(x[0], x[1], 0x88), _mm256_shuffle_ps(x[0], x[1], 0xDD));
    return _mm256_permutevar8x32_ps(t, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

__attribute__((target("avx2,fma"))) static void dots_avx2(const float *x, const float *rows, size_t stride, size_t n, int count,
                                                          float *out) {
    for (int j0 = 0; j0 < count; j0 += 8) {
        __m256 s[8];
        for (int j = 0; j < 8; j++) s[j] = j0 + j < count ? lanes16_avx2(x, rows + (size_t)(j0 + j) * stride, n) : _mm256_setzero_ps();
        float sums[8];
        _mm256_storeu_ps(sums, sums8_avx2(s));
        for (int j = 0; j < 8 && j0 + j < count; j++) out[j0 + j] = sums[j];
    }
}
#endif

#ifdef HONE_X86
// y[o] += scale · dot16(u, B_o, rank) for every output, from bt = Bᵀ (padded: `ranks` rows,
// a multiple of 16, those past the rank zero, as u's values): the same operations, LANES
// outputs at once (vertical fused multiply-adds and adds in dot16's order, no horizontal
// sums). The outputs past the last whole vector from B.
#define HONE_LORA_VERTICAL(NAME, TARGET, LANES, VEC, P)                                                               \
    __attribute__((target(TARGET))) static void NAME(const float *u, int rank, int ranks, const float *b, const float *bt, \
                                                     size_t out, float scale, float *y) {                             \
        const VEC sv = P##_set1_ps(scale);                                                                            \
        size_t o = 0;                                                                                                 \
        for (; o + LANES <= out; o += LANES) {                                                                        \
            VEC s[16];                                                                                                \
            _Pragma("clang loop unroll(full)") for (int l = 0; l < 16; l++) s[l] = P##_setzero_ps();                  \
            for (int r0 = 0; r0 < ranks; r0 += 16) {                                                                  \
                const float *col = bt + (size_t)r0 * out + o;                                                         \
                _Pragma("clang loop unroll(full)") for (int l = 0; l < 16; l++)                                       \
                    s[l] = P##_fmadd_ps(P##_set1_ps(u[r0 + l]), P##_loadu_ps(col + (size_t)l * out), s[l]);          \
            }                                                                                                         \
            _Pragma("clang loop unroll(full)") for (int l = 0; l < 8; l++) s[l] = P##_add_ps(s[l], s[l + 8]);         \
            _Pragma("clang loop unroll(full)") for (int l = 0; l < 4; l++) s[l] = P##_add_ps(s[l], s[l + 4]);         \
            _Pragma("clang loop unroll(full)") for (int l = 0; l < 2; l++) s[l] = P##_add_ps(s[l], s[l + 2]);         \
            s[0] = P##_add_ps(s[0], s[1]);                                                                            \
            P##_storeu_ps(y + o, P##_add_ps(P##_loadu_ps(y + o), P##_mul_ps(sv, s[0])));                              \
        }                                                                                                             \
        for (; o < out; o++) y[o] = y[o] + scale * dot16_plain(u, b + o * (size_t)rank, (size_t)rank);               \
    }
// The vertical form for four rows (u_j at u + j·rank, y_j at y + j·ldy) when the rank is at
// most 16: each load of Bᵀ serves the four rows (it came from L2 once per row).
#define HONE_LORA_VERTICAL4(NAME, TARGET, LANES, VEC, P)                                                              \
    __attribute__((target(TARGET))) static void NAME(const float *u, int rank, const float *b, const float *bt, size_t out, \
                                                     float scale, float *y, size_t ldy) {                             \
        const VEC sv = P##_set1_ps(scale), zero = P##_setzero_ps();                                                   \
        size_t o = 0;                                                                                                 \
        for (; o + LANES <= out; o += LANES) {                                                                        \
            VEC col[16];                                                                                              \
            _Pragma("clang loop unroll(full)") for (int l = 0; l < 16; l++) col[l] = P##_loadu_ps(bt + (size_t)l * out + o); \
            _Pragma("clang loop unroll(full)") for (int j = 0; j < 4; j++) {                                          \
                const float *uj = u + j * rank;                                                                       \
                VEC s[16];                                                                                            \
                _Pragma("clang loop unroll(full)") for (int l = 0; l < 16; l++)                                       \
                    s[l] = P##_fmadd_ps(P##_set1_ps(l < rank ? uj[l] : 0.0f), col[l], zero);                         \
                _Pragma("clang loop unroll(full)") for (int l = 0; l < 8; l++) s[l] = P##_add_ps(s[l], s[l + 8]);     \
                _Pragma("clang loop unroll(full)") for (int l = 0; l < 4; l++) s[l] = P##_add_ps(s[l], s[l + 4]);     \
                _Pragma("clang loop unroll(full)") for (int l = 0; l < 2; l++) s[l] = P##_add_ps(s[l], s[l + 2]);     \
                s[0] = P##_add_ps(s[0], s[1]);                                                                        \
                float *yj = y + j * ldy + o;                                                                          \
                P##_storeu_ps(yj, P##_add_ps(P##_loadu_ps(yj), P##_mul_ps(sv, s[0])));                                \
            }                                                                                                         \
        }                                                                                                             \
        for (int j = 0; j < 4; j++)                                                                                   \
            for (size_t k = o; k < out; k++)                                                                          \
                y[j * ldy + k] = y[j * ldy + k] + scale * dot16_plain(u + j * rank, b + k * (size_t)rank, (size_t)rank); \
    }
HONE_LORA_VERTICAL4(vertical4_avx512, "avx512f", 16, __m512, _mm512)
HONE_LORA_VERTICAL4(vertical4_avx2, "avx2,fma", 8, __m256, _mm256)
HONE_LORA_VERTICAL(vertical_avx512, "avx512f", 16, __m512, _mm512)
HONE_LORA_VERTICAL(vertical_avx2, "avx2,fma", 8, __m256, _mm256)
#endif

// out[j] = dot16(x, rows + j·stride, n) for j < count, sixteen at a time at the level.
static void dots(int level, const float *x, const float *rows, size_t stride, size_t n, size_t count, float *out) {
    for (size_t j = 0; j < count; j += 16) {
        const int c = count - j < 16 ? (int)(count - j) : 16;
#ifdef HONE_X86
        if (level == 2) {
            dots_avx512(x, rows + j * stride, stride, n, c, out + j);
            continue;
        }
        if (level == 1) {
            dots_avx2(x, rows + j * stride, stride, n, c, out + j);
            continue;
        }
#endif
        for (int k = 0; k < c; k++) out[j + k] = dot16_plain(x, rows + (j + k) * stride, n);
    }
}

void hone_lora_transpose(const float *b, int rank, size_t out, float *bt) {
    const int ranks = (rank + 15) / 16 * 16;
    for (size_t o = 0; o < out; o++)
        for (int r = 0; r < ranks; r++) bt[(size_t)r * out + o] = r < rank ? b[o * (size_t)rank + r] : 0;
}

// Without the caller's Bᵀ: rows from which B is transposed once for the call and the outputs
// come from vertical vector operations; with fewer, each output's dot16 is summed
// horizontally. 576 → 1536, Intel avx512: ~4.7 µs a row horizontally, ~2 µs vertically, ~20 µs
// to transpose.
#define HONE_LORA_TRANSPOSE_ROWS 4

void hone_lora_add(const float *x, size_t rows, size_t in, const float *a, int rank, const float *b, const float *given, size_t out,
                   float scale, float *y) {
    if (rank < 1) return;
    const int level = hone_kernels_level();
    const int ranks = (rank + 15) / 16 * 16;
    float t[256], stack[256 + 4 * 256];
    float *u = ranks <= 256 ? stack : malloc((size_t)(ranks + 4 * rank) * sizeof(float)), *u4 = u + (ranks <= 256 ? 256 : ranks);
    if (!u) abort();
    for (int r = rank; r < ranks; r++) u[r] = 0;
    const float *bt = given;
    float *made = NULL;
#ifdef HONE_X86
    if (!bt && level > 0 && rows >= HONE_LORA_TRANSPOSE_ROWS) {
        made = malloc((size_t)ranks * out * sizeof(float));
        if (!made) abort();
        hone_lora_transpose(b, rank, out, made);
        bt = made;
    }
#endif
    for (size_t i = 0; i < rows;) {
        float *yi = y + i * out;
#ifdef HONE_X86
        // Four rows at once: u for the four (AVX-512), then B·u for the four from Bᵀ.
        if (rows - i >= 4 && bt && rank <= 16) {
            if (level == 2) {
                dots4_avx512(x + i * in, in, a, in, rank, u4);
                vertical4_avx512(u4, rank, b, bt, out, scale, yi, out);
            } else {
                for (int j = 0; j < 4; j++) dots(level, x + (i + j) * in, a, in, in, (size_t)rank, u4 + j * rank);
                vertical4_avx2(u4, rank, b, bt, out, scale, yi, out);
            }
            i += 4;
            continue;
        }
#endif
        dots(level, x + i * in, a, in, in, (size_t)rank, u);   // u = A·x
#ifdef HONE_X86
        if (bt && level > 0) {
            if (level == 2) vertical_avx512(u, rank, ranks, b, bt, out, scale, yi);
            else vertical_avx2(u, rank, ranks, b, bt, out, scale, yi);
            i++;
            continue;
        }
#endif
        for (size_t o = 0; o < out; o += 256) {   // B·u, a chunk of outputs at a time
            const size_t c = out - o < 256 ? out - o : 256;
            dots(level, u, b + o * (size_t)rank, (size_t)rank, (size_t)rank, c, t);
            for (size_t k = 0; k < c; k++) yi[o + k] = yi[o + k] + scale * t[k];
        }
        i++;
    }
    free(made);
    if (u != stack) free(u);
}
