// Reference (scalar) conversions between float and the GGUF block formats (their layouts:
// the hone_block_* structs of CKernels.h).
#include "CKernels.h"
#include "kquants.h"
#include <math.h>
#include <stddef.h>
#include <string.h>

enum {
    Q8_0_BYTES = sizeof(hone_block_q8_0), Q8_0_QS = offsetof(hone_block_q8_0, qs),
    Q4_0_BYTES = sizeof(hone_block_q4_0), Q4_0_QS = offsetof(hone_block_q4_0, qs),
    Q4_1_BYTES = sizeof(hone_block_q4_1), Q4_1_M = offsetof(hone_block_q4_1, m), Q4_1_QS = offsetof(hone_block_q4_1, qs),
};
// The K-quant and 5-bit blocks are read through their structs: their fields are bytes
// except the fp16 scales, read with rd16 from the byte address.

float hone_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            // Subnormal: normalize.
            int e = -1;
            do { e++; mant <<= 1; } while ((mant & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t hone_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

int hone_dequantize_reference(int type, const void *src, float *dst, size_t n) {
    const uint8_t *s = (const uint8_t *)src;
    switch (type) {
    case HONE_TYPE_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case HONE_TYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = hone_f16_to_f32(rd16(s + 2 * i));
        return 0;
    case HONE_TYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)rd16(s + 2 * i) << 16;
            memcpy(dst + i, &bits, 4);
        }
        return 0;
    case HONE_TYPE_Q8_0:
        for (size_t b = 0; b < n / 32; b++, s += Q8_0_BYTES) {
            float d = hone_f16_to_f32(rd16(s));
            const int8_t *q = (const int8_t *)(s + Q8_0_QS);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)q[j];
        }
        return 0;
    case HONE_TYPE_Q4_0:
        for (size_t b = 0; b < n / 32; b++, s += Q4_0_BYTES) {
            float d = hone_f16_to_f32(rd16(s));
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((s[Q4_0_QS + j] & 0x0f) - 8);
                dst[b * 32 + j + 16] = d * (float)((s[Q4_0_QS + j] >> 4) - 8);
            }
        }
        return 0;
    case HONE_TYPE_Q4_1:
        for (size_t b = 0; b < n / 32; b++, s += Q4_1_BYTES) {
            float d = hone_f16_to_f32(rd16(s));
            float m = hone_f16_to_f32(rd16(s + Q4_1_M));
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)(s[Q4_1_QS + j] & 0x0f) + m;
                dst[b * 32 + j + 16] = d * (float)(s[Q4_1_QS + j] >> 4) + m;
            }
        }
        return 0;
    case HONE_TYPE_Q5_0:
    case HONE_TYPE_Q5_1: {
        const int one = type == HONE_TYPE_Q5_1;
        const size_t bytes = one ? sizeof(hone_block_q5_1) : sizeof(hone_block_q5_0);
        const size_t qh_at = one ? offsetof(hone_block_q5_1, qh) : offsetof(hone_block_q5_0, qh);
        const size_t qs_at = one ? offsetof(hone_block_q5_1, qs) : offsetof(hone_block_q5_0, qs);
        for (size_t b = 0; b < n / 32; b++, s += bytes) {
            float d = hone_f16_to_f32(rd16(s));
            float m = one ? hone_f16_to_f32(rd16(s + offsetof(hone_block_q5_1, m))) : 0;
            uint32_t qh = (uint32_t)s[qh_at] | (uint32_t)s[qh_at + 1] << 8 | (uint32_t)s[qh_at + 2] << 16 | (uint32_t)s[qh_at + 3] << 24;
            for (int j = 0; j < 16; j++) {
                int q0 = (s[qs_at + j] & 0x0f) | (int)((qh >> j) & 1) << 4;
                int q1 = (s[qs_at + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                // gguf-py: Q5_0 as d·(q − 16), Q5_1 as d·q + m, one rounding each.
                if (one) {
                    float p0 = d * (float)q0, p1 = d * (float)q1;
                    dst[b * 32 + j] = p0 + m;
                    dst[b * 32 + j + 16] = p1 + m;
                } else {
                    dst[b * 32 + j] = d * (float)(q0 - 16);
                    dst[b * 32 + j + 16] = d * (float)(q1 - 16);
                }
            }
        }
        return 0;
    }
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K: {
        const int five = type == HONE_TYPE_Q5_K;
        const size_t bytes = five ? sizeof(hone_block_q5_k) : sizeof(hone_block_q4_k);
        for (size_t b = 0; b < n / HONE_SUPERBLOCK_VALUES; b++, s += bytes) {
            const hone_block_q5_k *k5 = (const hone_block_q5_k *)s;
            const hone_block_q4_k *k4 = (const hone_block_q4_k *)s;
            float d = hone_f16_to_f32(rd16(s)), dmin = hone_f16_to_f32(rd16(s + offsetof(hone_block_q4_k, dmin)));
            const uint8_t *scales = five ? k5->scales : k4->scales, *qs = five ? k5->qs : k4->qs;
            float *y = dst + b * HONE_SUPERBLOCK_VALUES;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                hone_k_scale_min(j, scales, &sc, &m);
                // gguf-py: (d·sc)·q − dmin·m, each product rounded on its own.
                float dj = d * (float)sc, mj = dmin * (float)m;
                const uint8_t *q = qs + 32 * (j / 2);
                for (int l = 0; l < 32; l++) {
                    int v = (j & 1) ? q[l] >> 4 : q[l] & 0x0f;
                    if (five) v |= ((k5->qh[l] >> j) & 1) << 4;
                    float p = dj * (float)v;
                    y[32 * j + l] = p - mj;
                }
            }
        }
        return 0;
    }
    case HONE_TYPE_Q6_K:
        for (size_t b = 0; b < n / HONE_SUPERBLOCK_VALUES; b++, s += sizeof(hone_block_q6_k)) {
            const hone_block_q6_k *k = (const hone_block_q6_k *)s;
            float d = hone_f16_to_f32(rd16(s + offsetof(hone_block_q6_k, d)));
            float *y = dst + b * HONE_SUPERBLOCK_VALUES;
            for (int i = 0; i < HONE_SUPERBLOCK_VALUES; i++) {
                int q = hone_q6_k_value(k, i);
                float dsc = d * (float)k->scales[i / 16];
                y[i] = dsc * (float)(q - 32);
            }
        }
        return 0;
    default:
        return -1;
    }
}

// Packs 32 quants of 4 or 5 bits: low nibbles of values 0-15 and 16-31 share qs bytes; a
// fifth bit of value j goes to bit j of the 32-bit qh (qh_at 0: none).
static void pack_quants(uint8_t *o, const int q[32], size_t qs_at, size_t qh_at) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        o[qs_at + j] = (uint8_t)((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        qh |= (uint32_t)(q[j] >> 4) << j | (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    if (qh_at) memcpy(o + qh_at, &qh, 4);  // little-endian hosts only, as ggml
}

// Q4_0 and Q5_0 (ggml's reference): d = the value of largest magnitude / −2^(bits−1).
static void quantize_absmax_block(const float *x, uint8_t *o, int bits, size_t qs_at, size_t qh_at) {
    const int half = 1 << (bits - 1), top = (1 << bits) - 1;
    const float offset = (float)half + 0.5f;  // 8.5 or 16.5: one addition, as ggml rounds
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    }
    float d = max / -(float)half;
    float id = d ? 1.0f / d : 0.0f;
    wr16(o, hone_f32_to_f16(d));
    int q[32];
    for (int j = 0; j < 32; j++) {
        q[j] = (int)(x[j] * id + offset);
        q[j] = q[j] > top ? top : q[j];
    }
    pack_quants(o, q, qs_at, qh_at);
}

// Q4_1 and Q5_1 (ggml's reference): min/max over the block in 2^bits − 1 steps.
static void quantize_minmax_block(const float *x, uint8_t *o, int bits, size_t m_at, size_t qs_at, size_t qh_at) {
    const int top = (1 << bits) - 1;
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; j++) { min = fminf(min, x[j]); max = fmaxf(max, x[j]); }
    float d = (max - min) / (float)top;
    float id = d ? 1.0f / d : 0.0f;
    wr16(o, hone_f32_to_f16(d));
    wr16(o + m_at, hone_f32_to_f16(min));
    int q[32];
    for (int j = 0; j < 32; j++) {
        q[j] = (int)((x[j] - min) * id + 0.5f);
        q[j] = q[j] > top ? top : q[j];
    }
    pack_quants(o, q, qs_at, qh_at);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// One Q4_K/Q5_K super-block: each sub-block's range [min(0, min x), max x] in `top` steps,
// its scale and min then rounded to 6 bits of the super-block's d and dmin.
static void quantize_k_superblock(const float *x, uint8_t *o, int five, int top) {
    float scale[8], minus[8], dmax = 0, mmax = 0;
    for (int j = 0; j < 8; j++) {
        float lo = 0, hi = x[32 * j];
        for (int l = 0; l < 32; l++) { lo = fminf(lo, x[32 * j + l]); hi = fmaxf(hi, x[32 * j + l]); }
        scale[j] = (hi - lo) / (float)top;
        minus[j] = -lo;
        dmax = fmaxf(dmax, scale[j]);
        mmax = fmaxf(mmax, minus[j]);
    }
    float d = hone_f16_to_f32(hone_f32_to_f16(dmax / 63.0f)), dmin = hone_f16_to_f32(hone_f32_to_f16(mmax / 63.0f));
    uint8_t *scales = o + offsetof(hone_block_q4_k, scales);
    uint8_t *qs = o + (five ? offsetof(hone_block_q5_k, qs) : offsetof(hone_block_q4_k, qs));
    uint8_t *qh = five ? o + offsetof(hone_block_q5_k, qh) : NULL;
    memset(o, 0, five ? sizeof(hone_block_q5_k) : sizeof(hone_block_q4_k));
    wr16(o, hone_f32_to_f16(d));
    wr16(o + offsetof(hone_block_q4_k, dmin), hone_f32_to_f16(dmin));
    for (int j = 0; j < 8; j++) {
        int sc = d ? clampi((int)lrintf(scale[j] / d), 0, 63) : 0;
        int m = dmin ? clampi((int)lrintf(minus[j] / dmin), 0, 63) : 0;
        if (j < 4) {
            scales[j] |= (uint8_t)sc;
            scales[j + 4] |= (uint8_t)m;
        } else {
            scales[j + 4] = (uint8_t)((sc & 0x0f) | (m & 0x0f) << 4);
            scales[j - 4] |= (uint8_t)((sc >> 4) << 6);
            scales[j] |= (uint8_t)((m >> 4) << 6);
        }
        float step = d * (float)sc, offset = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int q = step ? clampi((int)lrintf((x[32 * j + l] + offset) / step), 0, top) : 0;
            qs[32 * (j / 2) + l] |= (uint8_t)((q & 0x0f) << ((j & 1) * 4));
            if (qh) qh[l] |= (uint8_t)((q >> 4) << j);
        }
    }
}

// One Q6_K super-block: each 16-value group scaled by max |x| / 31, the scales rounded to
// int8 steps of the super-block's d.
static void quantize_q6_k_superblock(const float *x, uint8_t *o) {
    hone_block_q6_k *k = (hone_block_q6_k *)o;
    memset(o, 0, sizeof(hone_block_q6_k));
    float group[16], gmax = 0;
    for (int g = 0; g < 16; g++) {
        float amax = 0;
        for (int l = 0; l < 16; l++) amax = fmaxf(amax, fabsf(x[16 * g + l]));
        group[g] = amax / 31.0f;
        gmax = fmaxf(gmax, group[g]);
    }
    float d = hone_f16_to_f32(hone_f32_to_f16(gmax / 127.0f));
    wr16(o + offsetof(hone_block_q6_k, d), hone_f32_to_f16(d));
    for (int g = 0; g < 16; g++) k->scales[g] = (int8_t)(d ? clampi((int)lrintf(group[g] / d), -128, 127) : 0);
    for (int i = 0; i < HONE_SUPERBLOCK_VALUES; i++) {
        float step = d * (float)k->scales[i / 16];
        int q = (step ? clampi((int)lrintf(x[i] / step), -32, 31) : 0) + 32;
        int half = i / 128, r = i % 128, t = r / 32, l = r % 32;
        uint8_t *ql = k->ql + 64 * half + ((t & 1) ? 32 : 0);
        ql[l] |= (uint8_t)((q & 0x0f) << ((t & 2) ? 4 : 0));
        k->qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * t));
    }
}

int hone_quantize(int type, const float *src, void *dst, size_t n) {
    uint8_t *o = (uint8_t *)dst;
    switch (type) {
    case HONE_TYPE_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case HONE_TYPE_F16:
        for (size_t i = 0; i < n; i++) wr16(o + 2 * i, hone_f32_to_f16(src[i]));
        return 0;
    case HONE_TYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, src + i, 4);
            bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
            wr16(o + 2 * i, (uint16_t)(bits >> 16));
        }
        return 0;
    case HONE_TYPE_Q8_0:
        for (size_t b = 0; b < n / 32; b++, o += Q8_0_BYTES) {
            const float *x = src + b * 32;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f;
            float id = d ? 1.0f / d : 0.0f;
            wr16(o, hone_f32_to_f16(d));
            for (int j = 0; j < 32; j++) ((int8_t *)(o + Q8_0_QS))[j] = (int8_t)roundf(x[j] * id);
        }
        return 0;
    case HONE_TYPE_Q4_0:
        for (size_t b = 0; b < n / 32; b++, o += Q4_0_BYTES) quantize_absmax_block(src + b * 32, o, 4, Q4_0_QS, 0);
        return 0;
    case HONE_TYPE_Q4_1:
        for (size_t b = 0; b < n / 32; b++, o += Q4_1_BYTES) quantize_minmax_block(src + b * 32, o, 4, Q4_1_M, Q4_1_QS, 0);
        return 0;
    case HONE_TYPE_Q5_0:
        for (size_t b = 0; b < n / 32; b++, o += sizeof(hone_block_q5_0))
            quantize_absmax_block(src + b * 32, o, 5, offsetof(hone_block_q5_0, qs), offsetof(hone_block_q5_0, qh));
        return 0;
    case HONE_TYPE_Q5_1:
        for (size_t b = 0; b < n / 32; b++, o += sizeof(hone_block_q5_1))
            quantize_minmax_block(src + b * 32, o, 5, offsetof(hone_block_q5_1, m), offsetof(hone_block_q5_1, qs), offsetof(hone_block_q5_1, qh));
        return 0;
    case HONE_TYPE_Q4_K:
    case HONE_TYPE_Q5_K:
        for (size_t b = 0; b < n / HONE_SUPERBLOCK_VALUES; b++) {
            const int five = type == HONE_TYPE_Q5_K, top = five ? 31 : 15;
            quantize_k_superblock(src + b * HONE_SUPERBLOCK_VALUES, o, five, top);
            o += five ? sizeof(hone_block_q5_k) : sizeof(hone_block_q4_k);
        }
        return 0;
    case HONE_TYPE_Q6_K:
        for (size_t b = 0; b < n / HONE_SUPERBLOCK_VALUES; b++, o += sizeof(hone_block_q6_k))
            quantize_q6_k_superblock(src + b * HONE_SUPERBLOCK_VALUES, o);
        return 0;
    default:
        return -1;
    }
}
