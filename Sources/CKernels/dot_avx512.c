// The AVX-512 level (VNNI: Intel Sapphire Rapids and later, AMD Zen 4 and later): one row
// against one vector, four rows against up to four vectors (lane order), and four rows
// against up to sixteen (vpdpwssd, one vector per lane).
#include "blocks.h"
#include <stdlib.h>

#ifdef HONE_X86
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
// byte {s, s, 8 + s, 8 + s} (the words' low bytes, then their high bytes). The last row,
// {8, 8, 0, 0}, is Q8_0's left shift that puts each low byte's sign at the word's top.
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
            c[r] = block_constant(type, p, a_lo[r]);
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

float hone_dot_q_avx512(int type, const void *w, const int16_t *q, const hone_act_scale *s, size_t n) {
    avx512_kernels k = kernels_avx512(type);
    return k.row ? k.row((const uint8_t *)w, q, s, n) : hone_dot_q_reference(type, w, q, s, n);
}

// The rows of hone_dot_q_rows_multi at this level. Vectors go in groups of up to sixteen:
// nine or more through rows4_many16, five to eight through rows4_many8 (each costs the
// same per row whatever its group's count), up to four through rows4_few, whose cost grows
// with the count.
void hone_rows_multi_avx512(int type, const uint8_t *p, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
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
            out[j * out_stride + r] = hone_dot_q_avx512(type, p + (size_t)r * row_bytes, q + j * q_stride, scales + j * scales_stride, n);
}

int hone_avx512_reads(int type) { return kernels_avx512(type).row != NULL; }
#endif
