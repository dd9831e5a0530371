import CKernels
import Foundation

/// Causal grouped-query self-attention over whole sequences packed one after another: the
/// training form. Serving attends one row at a time over its KV cache instead (Llama's
/// forward).
///
/// Rows 0..<prefix are a prefix that every sequence shares (a chat's system turn, say):
/// it is computed once, and each sequence's rows — `lengths[s]` consecutive rows after it —
/// attend to the prefix's rows before their own. With prefix 0 the sequences are plain.
/// Shapes: q, out: (N, H·D); k, v: (N, KV·D); N = prefix + Σ lengths.
public struct CausalAttention: Sendable {
    /// H query heads.
    public let heads: Int
    /// KV key/value heads; query head h reads kv head h / (H / KV).
    public let kvHeads: Int
    /// D values per head.
    public let headDim: Int

    /// Attention with H heads over KV key/value heads of D values (H a multiple of KV).
    public init(heads: Int, kvHeads: Int, headDim: Int) {
        precondition(heads % kvHeads == 0)
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
    }

    /// One attention problem: `rows` query rows from `row0`, attending to `context` keys —
    /// the shared prefix's first, then their own rows — with the causal mask.
    private struct Segment {
        let row0: Int
        let rows: Int
        /// Prefix rows this segment sees before its own (0 for the prefix itself).
        let prefix: Int
        var context: Int { prefix + rows }
    }

    private static func segments(prefix: Int, lengths: [Int]) -> [Segment] {
        var out: [Segment] = prefix > 0 ? [Segment(row0: 0, rows: prefix, prefix: 0)] : []
        var row = prefix
        for l in lengths {
            out.append(Segment(row0: row, rows: l, prefix: prefix))
            row += l
        }
        return out
    }

    /// The keys (or values) of kv head `g` that `segment` attends to, as (context, D) rows with
    /// their leading dimension: in place when the segment has no prefix, else gathered.
    private func context(_ x: UnsafePointer<Float>, _ segment: Segment, group g: Int,
                         _ body: (UnsafePointer<Float>, Int) -> Void) {
        let (kvd, d) = (kvHeads * headDim, headDim)
        guard segment.prefix > 0 else { return body(x + segment.row0 * kvd + g * d, kvd) }
        var gathered = [Float](repeating: 0, count: segment.context * d)
        for j in 0..<segment.context {
            let row = j < segment.prefix ? j : segment.row0 + j - segment.prefix
            for e in 0..<d { gathered[j * d + e] = x[row * kvd + g * d + e] }
        }
        gathered.withUnsafeBufferPointer { body($0.baseAddress!, d) }
    }

    /// out = softmax(q·kᵀ/√D + causal mask) · v per sequence and head; head h reads kv head
    /// h / (H / KV).
    public func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                        prefix: Int = 0, lengths: [Int], out: UnsafeMutablePointer<Float>) {
        let (hd, d) = (heads * headDim, headDim)
        let segments = Self.segments(prefix: prefix, lengths: lengths)
        Parallel.for(segments.count * heads) { job in
            let segment = segments[job / heads], head = job % heads, g = head / (heads / kvHeads)
            context(k, segment, group: g) { kc, ldk in
                context(v, segment, group: g) { vc, ldv in
                    var p = probabilities(q: q + segment.row0 * hd + head * d, k: kc, ldk: ldk, segment)
                    // out_h (L, D) = P (L, C) · v_g (C, D)
                    gemm(m: segment.rows, n: d, k: segment.context, &p, lda: segment.context, vc, ldb: ldv,
                         out + segment.row0 * hd + head * d, ldc: hd, parallel: false)
                }
            }
        }
    }

    /// Backward of `forward`, recomputing the probabilities P rather than caching them
    /// (L² per head and layer would dominate memory): with dP = dout · vᵀ,
    /// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS · k / √D, dk += dSᵀ · q / √D, dv += Pᵀ · dout.
    /// dq is overwritten; dk and dv accumulate (the heads of a group, and the sequences
    /// sharing the prefix, add into them).
    public func backward(_ dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                         v: UnsafePointer<Float>, prefix: Int = 0, lengths: [Int],
                         dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
        let (hd, kvd, d) = (heads * headDim, kvHeads * headDim, headDim)
        let group = heads / kvHeads
        let scale = 1 / sqrtf(Float(d))
        let segments = Self.segments(prefix: prefix, lengths: lengths)
        // What each (segment, kv head) job adds to the shared prefix's dk and dv rows: kept
        // apart and summed after the jobs, so every row of dk and dv has a single writer.
        var prefixGradients = [[Float]](repeating: [], count: segments.count * kvHeads)
        prefixGradients.withUnsafeMutableBufferPointer { shared in
            let shared = shared.baseAddress!
            // One job per (segment, kv head): its query heads run serially.
            Parallel.for(segments.count * kvHeads) { job in
                let segment = segments[job / kvHeads], g = job % kvHeads
                let (len, ctx) = (segment.rows, segment.context)
                // d(keys) and d(values) of the context, (C, D) each.
                var dkc = [Float](repeating: 0, count: ctx * d), dvc = dkc
                var dp = [Float](repeating: 0, count: len * ctx)
                context(k, segment, group: g) { kc, ldk in
                    context(v, segment, group: g) { vc, ldv in
                        for head in (g * group)..<((g + 1) * group) {
                            let qh = q + segment.row0 * hd + head * d, doh = dout + segment.row0 * hd + head * d
                            let p = probabilities(q: qh, k: kc, ldk: ldk, segment)
                            // dP (L, C) = dout_h (L, D) · v_gᵀ
                            gemm(transB: true, m: len, n: ctx, k: d, doh, lda: hd, vc, ldb: ldv, &dp, ldc: ctx, parallel: false)
                            // dv_g += Pᵀ · dout_h
                            gemm(transA: true, m: ctx, n: d, k: len, p, lda: ctx, doh, ldb: hd, beta: 1, &dvc, ldc: d, parallel: false)
                            // dS in place of dP (causal: only j ≤ prefix + i are non-zero).
                            for i in 0..<len {
                                let last = segment.prefix + i
                                var dot: Float = 0
                                for j in 0...last { dot += p[i * ctx + j] * dp[i * ctx + j] }
                                for j in 0...last { dp[i * ctx + j] = p[i * ctx + j] * (dp[i * ctx + j] - dot) }
                                for j in (last + 1)..<ctx { dp[i * ctx + j] = 0 }
                            }
                            // dq_h = dS · k_g · scale; dk_g += dSᵀ · q_h · scale
                            gemm(m: len, n: d, k: ctx, alpha: scale, dp, lda: ctx, kc, ldb: ldk,
                                 dq + segment.row0 * hd + head * d, ldc: hd, parallel: false)
                            gemm(transA: true, m: ctx, n: d, k: len, alpha: scale, dp, lda: ctx, qh, ldb: hd, beta: 1,
                                 &dkc, ldc: d, parallel: false)
                        }
                    }
                }
                // The segment's own rows: written by this job alone.
                for j in 0..<len {
                    let row = (segment.row0 + j) * kvd + g * d, local = (segment.prefix + j) * d
                    for e in 0..<d {
                        dk[row + e] += dkc[local + e]
                        dv[row + e] += dvc[local + e]
                    }
                }
                if segment.prefix > 0 {
                    shared[job] = Array(dkc[0..<(segment.prefix * d)]) + Array(dvc[0..<(segment.prefix * d)])
                }
            }
        }
        for (job, part) in prefixGradients.enumerated() where !part.isEmpty {
            let g = job % kvHeads, half = prefix * d
            for j in 0..<prefix {
                for e in 0..<d {
                    dk[j * kvd + g * d + e] += part[j * d + e]
                    dv[j * kvd + g * d + e] += part[half + j * d + e]
                }
            }
        }
    }

    /// P (L, C): row i is softmax over j ≤ prefix + i of q_i · k_j / √D, zero for later j.
    private func probabilities(q: UnsafePointer<Float>, k: UnsafePointer<Float>, ldk: Int, _ segment: Segment) -> [Float] {
        let d = headDim, len = segment.rows, ctx = segment.context
        var p = [Float](repeating: 0, count: len * ctx)
        gemm(transB: true, m: len, n: ctx, k: d, alpha: 1 / sqrtf(Float(d)), q, lda: heads * d, k, ldb: ldk,
             &p, ldc: ctx, parallel: false)
        p.withUnsafeMutableBufferPointer { pp in
            for i in 0..<len {
                let last = segment.prefix + i
                hone_softmax(pp.baseAddress! + i * ctx, last + 1)
                for j in (last + 1)..<ctx { pp[i * ctx + j] = 0 }
            }
        }
        return p
    }
}
