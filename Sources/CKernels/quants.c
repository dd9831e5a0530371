// Reference (scalar) conversions between float and the GGUF block formats (their layouts:
// the hone_block_* structs of CKernels.h).
#include "CKernels.h"
#include <math.h>
#include <stddef.h>
#include <string.h>

enum {
    Q8_0_BYTES = sizeof(hone_block_q8_0), Q8_0_QS = offsetof(hone_block_q8_0, qs),
    Q4_0_BYTES = sizeof(hone_block_q4_0), Q4_0_QS = offsetof(hone_block_q4_0, qs),
    Q4_1_BYTES = sizeof(hone_block_q4_1), Q4_1_M = offsetof(hone_block_q4_1, m), Q4_1_QS = offsetof(hone_block_q4_1, qs),
};

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

int hone_dequantize(int type, const void *src, float *dst, size_t n) {
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
    default:
        return -1;
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
        for (size_t b = 0; b < n / 32; b++, o += Q4_0_BYTES) {
            const float *x = src + b * 32;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++) {
                if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
            }
            float d = max / -8.0f;
            float id = d ? 1.0f / d : 0.0f;
            wr16(o, hone_f32_to_f16(d));
            for (int j = 0; j < 16; j++) {
                int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
                q0 = q0 > 15 ? 15 : q0; q1 = q1 > 15 ? 15 : q1;
                o[Q4_0_QS + j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
        return 0;
    case HONE_TYPE_Q4_1:
        for (size_t b = 0; b < n / 32; b++, o += Q4_1_BYTES) {
            const float *x = src + b * 32;
            float min = x[0], max = x[0];
            for (int j = 1; j < 32; j++) { min = fminf(min, x[j]); max = fmaxf(max, x[j]); }
            float d = (max - min) / 15.0f;
            float id = d ? 1.0f / d : 0.0f;
            wr16(o, hone_f32_to_f16(d));
            wr16(o + Q4_1_M, hone_f32_to_f16(min));
            for (int j = 0; j < 16; j++) {
                int q0 = (int)((x[j] - min) * id + 0.5f), q1 = (int)((x[j + 16] - min) * id + 0.5f);
                q0 = q0 > 15 ? 15 : q0; q1 = q1 > 15 ? 15 : q1;
                o[Q4_1_QS + j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
        return 0;
    default:
        return -1;
    }
}
