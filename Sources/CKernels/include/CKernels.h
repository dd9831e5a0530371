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
    HONE_TYPE_Q5_0 = 6,
    HONE_TYPE_Q5_1 = 7,
    HONE_TYPE_Q8_0 = 8,
    HONE_TYPE_Q4_K = 12,
    HONE_TYPE_Q5_K = 13,
    HONE_TYPE_Q6_K = 14,
    HONE_TYPE_BF16 = 30,
};

// Block layouts of the quantized types, as ggml names them (ggml-common.h): 32 values a
// block, fp16 scales stored as their bits. The kernels read blocks as bytes (a block may sit
// at any even address) at these structs' `offsetof`s; Swift takes their sizes from here.
#define HONE_BLOCK_VALUES 32
/// Q8_0: x = d·q.
typedef struct {
    uint16_t d;
    int8_t qs[HONE_BLOCK_VALUES];
} hone_block_q8_0;
/// Q4_0: x = d·(q − 8); values 0–15 in the low nibbles of qs, 16–31 in the high ones.
typedef struct {
    uint16_t d;
    uint8_t qs[HONE_BLOCK_VALUES / 2];
} hone_block_q4_0;
/// Q4_1: x = d·q + m; nibbles as Q4_0's.
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qs[HONE_BLOCK_VALUES / 2];
} hone_block_q4_1;
/// Q5_0: x = d·(q − 16), q of 5 bits: the low four as Q4_0's nibbles, the fifth of value j
/// in bit j of qh (little-endian).
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[HONE_BLOCK_VALUES / 2];
} hone_block_q5_0;
/// Q5_1: x = d·q + m; q as Q5_0's.
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[HONE_BLOCK_VALUES / 2];
} hone_block_q5_1;
_Static_assert(sizeof(hone_block_q8_0) == 34, "Q8_0 block is 34 bytes in GGUF files");
_Static_assert(sizeof(hone_block_q4_0) == 18, "Q4_0 block is 18 bytes in GGUF files");
_Static_assert(sizeof(hone_block_q4_1) == 20, "Q4_1 block is 20 bytes in GGUF files");
_Static_assert(sizeof(hone_block_q5_0) == 22, "Q5_0 block is 22 bytes in GGUF files");
_Static_assert(sizeof(hone_block_q5_1) == 24, "Q5_1 block is 24 bytes in GGUF files");

// K-quants: super-blocks of 256 values in sub-blocks of 32 (Q4_K, Q5_K) or 16 (Q6_K) that
// each have their own small integer scale, so rows must be a multiple of 256 long.
#define HONE_SUPERBLOCK_VALUES 256
/// Q4_K: sub-block j (values 32j…32j+31) is x = d·sc_j·q − dmin·m_j, with sc_j and m_j of
/// 6 bits packed in `scales` (ggml's get_scale_min_k4) and q the low nibbles of
/// qs[32⌊j/2⌋…] for even j, the high nibbles for odd j.
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[HONE_SUPERBLOCK_VALUES / 2];
} hone_block_q4_k;
/// Q5_K: Q4_K with a fifth bit, bit j of qh[l] for value l of sub-block j.
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[HONE_SUPERBLOCK_VALUES / 8];
    uint8_t qs[HONE_SUPERBLOCK_VALUES / 2];
} hone_block_q5_k;
/// Q6_K: x = d·scales[i/16]·(q − 32), q of 6 bits: four low bits in ql, two high in qh
/// (ggml's dequantize_row_q6_K gives the interleaving). The scale comes last.
typedef struct {
    uint8_t ql[HONE_SUPERBLOCK_VALUES / 2];
    uint8_t qh[HONE_SUPERBLOCK_VALUES / 4];
    int8_t scales[HONE_SUPERBLOCK_VALUES / 16];
    uint16_t d;
} hone_block_q6_k;
_Static_assert(sizeof(hone_block_q4_k) == 144, "Q4_K block is 144 bytes in GGUF files");
_Static_assert(sizeof(hone_block_q5_k) == 176, "Q5_K block is 176 bytes in GGUF files");
_Static_assert(sizeof(hone_block_q6_k) == 210, "Q6_K block is 210 bytes in GGUF files");

/// IEEE half (bits) to float, exact for every value including subnormals, inf and NaN.
float hone_f16_to_f32(uint16_t h);
/// Float to IEEE half (bits), round to nearest even.
uint16_t hone_f32_to_f16(float f);

/// Dequantizes `n` elements (a multiple of the type's block size) of `type` at `src` into
/// `dst`, as gguf-py does. Returns 0, or -1 for an unsupported type. The quantized types
/// take the SIMD block decoders of the kernel level in use (AVX2 or AVX-512) (prompt chunks
/// dequantize every weight once per chunk), with results bit-identical to the portable twin
/// below.
int hone_dequantize(int type, const void *src, float *dst, size_t n);
/// The portable dequantization (quants.c).
int hone_dequantize_reference(int type, const void *src, float *dst, size_t n);

/// Quantizes `n` floats (a multiple of the type's block size) into `type` blocks at `dst`:
/// ggml's reference rounding for Q8_0, Q4_0, Q5_0 (by max |x|) and Q4_1, Q5_1 (by min/max);
/// for the K-quants a plain rounding of each sub-block's range (not llama.cpp's search for
/// the best scales, so slightly less accurate). Used by the GGUF writer for test models.
/// Returns 0, or -1 for an unsupported type.
int hone_quantize(int type, const float *src, void *dst, size_t n);

// ---- Dot products (kernels.c; each level's kernels in dot_avx2.c, dot_avx512.c). Each
// has a portable reference and SIMD variants chosen at run time; `hone_kernels_use` runs a
// lower level (the tests compare every level the CPU runs).

/// Kernel levels (levels.c): 0 reference (portable C), 1 AVX2 + FMA + F16C, 2 AVX-512 (F, BW,
/// VL, VNNI) with BMI2.
/// The highest level this CPU can run.
int hone_cpu_level(void);
/// The level in use: `HONE_KERNELS` (reference, avx2 or avx512) when set, read at the first
/// call, else the CPU's highest. A level the CPU lacks, or an unknown name, stops the
/// process with the reason on stderr (exit code 2) rather than run something else.
int hone_kernels_level(void);
/// The level's name as `HONE_KERNELS` spells it ("reference", "avx2", "avx512").
const char *hone_kernels_level_name(int level);
/// Switches the level in use (tests hold each level to the reference); returns the previous
/// level, or -1 (nothing changed) for a level this CPU cannot run.
int hone_kernels_use(int level);

/// sum(a[i] * b[i]) over n floats.
float hone_dot_f32(const float *a, const float *b, size_t n);

/// Activations quantized per 32-value block for integer dot products: q = round(x/d) as
/// int16, d = max|x|/32767, and sum = Σq per block (what Q4_1's offset term and Q4_0's
/// -8 need). int16 rather than llama.cpp's int8: on SmolLM2 int8 activations alone move
/// the top-1 token at ~3% of positions; int16 keeps the fast path within rounding of
/// the float32 reference at nearly the same speed (decode is memory-bound).
typedef struct {
    float d;
    int32_t sum;
} hone_act_scale;

/// Quantizes n floats (multiple of 32) into q (n int16) and scales (n/32).
void hone_quantize_activations(const float *x, size_t n, int16_t *q, hone_act_scale *scales);

/// Dot product of one quantized weight row (`type`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
/// Q5_K or Q6_K; n values) with activations quantized by hone_quantize_activations.
float hone_dot_q(int type, const void *w, const int16_t *q, const hone_act_scale *scales, size_t n);

// ---- Persistent worker pools (pool.c): matrix products run ~200 parallel loops per
// token, so waking threads must cost well under a microsecond. Workers spin briefly
// after each loop, then sleep. One pool per class of work (Tensor's ComputeScheduler).

typedef void (*hone_task_fn)(void *context, int index);
typedef struct hone_pool hone_pool;

/// A pool of `threads` threads (the caller of each loop counts as one) whose workers run
/// at nice value `nice`. Pools live as long as the process.
hone_pool *hone_pool_create(int threads, int nice);
/// The pool's thread count, the caller included.
int hone_pool_threads(const hone_pool *pool);
/// The kernel thread ids of the pool's started workers (at most `capacity`); their count.
int hone_pool_worker_ids(hone_pool *pool, int *ids, int capacity);
/// Sets the default pool's thread count; call before its first loop.
void hone_pool_set_threads(int threads);
/// The default pool: normal priority, for threads bound to no other.
hone_pool *hone_pool_default(void);
/// Sends the calling thread's loops to `pool` (NULL: the default pool).
void hone_pool_bind(hone_pool *pool);
/// The pool the calling thread's loops go to.
hone_pool *hone_pool_bound(void);
/// Runs fn(context, i) for every i in 0..<count across the calling thread's pool and the
/// calling thread; returns when all have run. Concurrent callers of one pool take turns.
void hone_parallel_for(int count, hone_task_fn fn, void *context);

/// The calling thread's kernel id (Linux gettid).
int hone_thread_id(void);
/// Sets the calling thread's nice value (Linux: per thread); 0 or -1 with errno.
int hone_thread_set_nice(int nice);
/// The nice value of kernel thread `tid`.
int hone_thread_nice(int tid);

/// Fixes, for the calling thread, how one vector over a long span of rows (≥ 256 KB, the
/// output head's parts) is read: row by row (1) or by the level's four-row kernels (0).
/// Otherwise each thread times its first long spans both ways and keeps the faster (the
/// two give the same bits). For tests.
void hone_long_spans_fix(int row_by_row);

/// Dot products of `rows` consecutive quantized weight rows (each `row_bytes` apart) with
/// one quantized activation vector; out[r] for each row.
void hone_dot_q_rows(int type, const void *w, size_t row_bytes, int rows, const int16_t *q,
                     const hone_act_scale *scales, size_t n, float *out);

/// The same for `m` activation vectors (vector j at q + j·q_stride, its scales at
/// scales + j·scales_stride), out[j·out_stride + r]. Each weight block is decoded once for
/// several vectors (AVX2: two; AVX-512: up to sixteen, one per lane, each block summed
/// exactly in int32 before its one FMA); every result is bit-identical to
/// `hone_dot_q_rows` on its vector alone, so batching rows never changes what a sequence
/// produces.
void hone_dot_q_rows_multi(int type, const void *w, size_t row_bytes, int rows, const int16_t *q, size_t q_stride,
                           const hone_act_scale *scales, size_t scales_stride, int m, size_t n, float *out, size_t out_stride);

// ---- Element-wise kernels and decode attention (pointwise.c).

/// e^x by one algorithm at every kernel level (Cephes' expf: a two-part reduction by n·ln 2
/// and a degree-6 polynomial), so each level's vector form gives these bits: within ~1 ulp
/// of libm's expf for x in [-87, 88]; x is clamped to that range (no infinities, no
/// subnormals).
float hone_exp(float x);

/// out[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + e^−g) with `hone_exp`: the same bits at
/// every level. `out` may be `gate`.
void hone_swiglu(const float *gate, const float *up, size_t n, float *out);

/// Backward of `hone_swiglu` (sigmoid through `hone_exp`): dgate and dup overwritten; the
/// same bits at every level.
void hone_swiglu_backward(const float *dout, const float *gate, const float *up, size_t n, float *dgate, float *dup);

/// x = softmax(x) in place: the exponentials through `hone_exp` relative to the maximum,
/// summed in order, each divided by the sum: the same values at every level.
void hone_softmax(float *x, size_t n);

/// ln Σ e^x[i], the exponentials through `hone_exp` relative to the maximum, summed in
/// order in double: the same value at every level.
float hone_log_sum_exp(const float *x, size_t n);

/// One decode row's attention for the `group` query heads that share one KV head: q holds
/// the group's heads (group × d), key and value row t sit at keys + t·stride and values +
/// t·stride. scores (group × length) is scratch; out receives the group's heads (group × d):
/// softmax(q·kᵀ · scale) · v over the `length` cached positions.
void hone_attend_cached(const float *q, int group, int d, const float *keys, const float *values, size_t stride, int length,
                        float scale, float *scores, float *out);

// ---- LoRA (lora.c).

/// y_i += scale · B·(A·x_i) for each of `rows` rows: x (rows × in), A (rank × in), B (out ×
/// rank), y (rows × out), all row-major. bt, when not NULL, is Bᵀ padded with zero rows to a
/// multiple of 16 rows (⌈rank/16⌉·16 × out). Every dot product is sixteen lanes of fused
/// multiply-adds summed pairwise, so a row's result has the same bits at every level, with
/// or without bt, and in any call.
void hone_lora_add(const float *x, size_t rows, size_t in, const float *a, int rank, const float *b, const float *bt, size_t out,
                   float scale, float *y);

/// bt = Bᵀ as `hone_lora_add` takes it: B (out × rank) transposed into ⌈rank/16⌉·16 rows of
/// `out`, the rows past the rank zero.
void hone_lora_transpose(const float *b, int rank, size_t out, float *bt);

// ---- Memory (memory.c).

/// The process's heap policy (glibc; a no-op on other C libraries, and each setting left
/// to the user where the matching MALLOC_* variable is set):
/// - one arena for every thread: with one per thread (glibc's default, up to 8 per core),
///   the buffers a training step frees on one worker thread are not reused by the next
///   allocation on another, and an update's peak RSS was 1.4–2.0 GB against 0.77 GB with
///   one (release, `honebench learn`, 8 corrections, same training time);
/// - large freed buffers kept for reuse (maximum mmap threshold, trim only above 1 GiB)
///   instead of returned to the kernel, which zeroes every page again when they come back:
///   training allocates and frees the same tens-of-MB buffers in every block of every step
///   (trimming above 64 MB instead did not lower that peak: 1.6 GB).
/// Called first thing by each executable (`CPUEnvironment.prepareProcess`, whose
/// re-execution also gets MALLOC_ARENA_MAX=1 so glibc has one arena before any thread
/// starts) and again by the trainer, for processes that did not.
void hone_configure_heap(void);

/// Returns the heap's free pages to the kernel (glibc `malloc_trim(0)`: the top of every
/// arena and whole free pages inside them); 1 when something was released. For a process
/// that goes idle after training, so the buffers kept above do not stay resident.
int hone_release_freed_memory(void);

/// The C heap's bytes in use by the program (arenas plus mmapped blocks) and free inside the
/// arenas (kept for reuse, resident until trimmed), over all arenas (glibc `mallinfo2`);
/// 0 and both zero where the C library cannot tell. Tells a leak (in use grows) from
/// fragmentation (free grows) when resident memory climbs.
int hone_heap_usage(size_t *in_use, size_t *free_bytes);
