// Hone's C kernels: what Swift cannot express well (fp16 bit tricks, SIMD int8 dot
// products). Every fast kernel has a plain reference twin that tests hold it equal to;
// fast paths are chosen at run time from the CPU's features, never by global -march.
#pragma once
#include <stddef.h>
#include <stdint.h>

// ggml tensor type ids (the GGUF file format's numbering).
enum {
    HONE_TYPE_F32 = 0,
    HONE_TYPE_F16 = 1,
    HONE_TYPE_Q4_0 = 2,
    HONE_TYPE_Q4_1 = 3,
    HONE_TYPE_Q8_0 = 8,
    HONE_TYPE_BF16 = 30,
};

/// IEEE half (bits) to float, exact for every value including subnormals, inf and NaN.
float hone_f16_to_f32(uint16_t h);
/// Float to IEEE half (bits), round to nearest even.
uint16_t hone_f32_to_f16(float f);

/// Dequantizes `n` elements (a multiple of the type's block size) of `type` at `src` into
/// `dst`. Returns 0, or -1 for an unsupported type.
int hone_dequantize(int type, const void *src, float *dst, size_t n);

/// Quantizes `n` floats (multiple of 32) into `type` blocks at `dst` (the reference
/// rounding of ggml: Q8_0 and Q4_0 by max |x|, Q4_1 by min/max). Used by the GGUF writer
/// for test models. Returns 0, or -1 for an unsupported type.
int hone_quantize(int type, const float *src, void *dst, size_t n);

// ---- Dot products (kernels.c). Each has a portable reference and SIMD variants chosen at
// run time; `hone_kernels_force_reference(1)` pins the reference (tests compare both).

/// Which SIMD level the dispatcher chose: 0 reference, 1 AVX2+FMA, 2 AVX-512 (+VNNI).
int hone_kernels_level(void);
/// Pins the portable reference kernels (1) or restores run-time dispatch (0).
void hone_kernels_force_reference(int on);

/// sum(a[i] * b[i]) over n floats.
float hone_dot_f32(const float *a, const float *b, size_t n);

/// Activations quantized per 32-value block for integer dot products: q = round(x/d),
/// d = max|x|/127, and sum = Σq per block (what Q4_1's offset term needs).
typedef struct {
    float d;
    int32_t sum;
} hone_q8_scale;

/// Quantizes n floats (multiple of 32) into q (n int8) and scales (n/32).
void hone_quantize_q8(const float *x, size_t n, int8_t *q, hone_q8_scale *scales);

/// Dot product of one quantized weight row (`type`: Q4_0, Q4_1 or Q8_0, n values) with
/// activations quantized by hone_quantize_q8.
float hone_dot_q(int type, const void *w, const int8_t *q, const hone_q8_scale *scales, size_t n);
