// Helpers shared by the K-quant converters (quants.c) and the block readers (blocks.h).
#pragma once
#include "CKernels.h"

/// Sub-block j's 6-bit scale and min of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4):
/// j < 4 in the low six bits of scales[j] and scales[j+4]; j ≥ 4 in the nibbles of
/// scales[j+4] with their top two bits in the spare high bits of scales[j-4] and scales[j].
static inline void hone_k_scale_min(int j, const uint8_t *scales, int *sc, int *m) {
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4);
        *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
    }
}

/// Value i (0…255) of a Q6_K super-block as its unsigned 6-bit q: in each half of 128,
/// values l, l+32, l+64, l+96 (l < 32) take the low nibble of ql[l], of ql[l+32], the high
/// nibble of ql[l], of ql[l+32], and bits 0-1, 2-3, 4-5, 6-7 of qh[l].
static inline int hone_q6_k_value(const hone_block_q6_k *k, int i) {
    int half = i / 128, r = i % 128, t = r / 32, l = r % 32;
    const uint8_t *ql = k->ql + 64 * half, *qh = k->qh + 32 * half;
    int low = ((t & 1) ? ql[l + 32] : ql[l]);
    low = (t & 2) ? low >> 4 : low & 0x0f;
    return low | ((qh[l] >> (2 * t)) & 3) << 4;
}
