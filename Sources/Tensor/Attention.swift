import Foundation

/// Causal grouped-query self-attention over whole sequences packed one after another
/// (sequence s holds `lengths[s]` consecutive rows): the training form. Serving attends
/// one row at a time over its KV cache instead (Llama's forward).
/// Shapes: q, out: (N, H·D); k, v: (N, KV·D); N = Σ lengths.
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

    /// out = softmax(q·kᵀ/√D + causal mask) · v per sequence and head; head h reads kv head
    /// h / (H / KV).
    public func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                        lengths: [Int], out: UnsafeMutablePointer<Float>) {
        let (hd, kvd, d) = (heads * headDim, kvHeads * headDim, headDim)
        let starts = Self.starts(lengths)
        Parallel.for(lengths.count * heads) { job in
            let s = job / heads, head = job % heads, g = head / (heads / kvHeads)
            let len = lengths[s], row0 = starts[s]
            var p = probabilities(q: q + row0 * hd + head * d, k: k + row0 * kvd + g * d, length: len)
            // out_h (L, D) = P (L, L) · v_g (L, D)
            gemm(m: len, n: d, k: len, &p, lda: len, v + row0 * kvd + g * d, ldb: kvd,
                 out + row0 * hd + head * d, ldc: hd, parallel: false)
        }
    }

    /// Backward of `forward`, recomputing the probabilities P rather than caching them
    /// (L² per head and layer would dominate memory): with dP = dout · vᵀ,
    /// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS · k / √D, dk += dSᵀ · q / √D, dv += Pᵀ · dout.
    /// dq is overwritten; dk and dv accumulate (the heads of a group share them).
    public func backward(_ dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                         v: UnsafePointer<Float>, lengths: [Int],
                         dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
        let (hd, kvd, d) = (heads * headDim, kvHeads * headDim, headDim)
        let group = heads / kvHeads
        let scale = 1 / sqrtf(Float(d))
        let starts = Self.starts(lengths)
        // One job per (sequence, kv head): its query heads run serially, so the shared dk
        // and dv rows have a single writer.
        Parallel.for(lengths.count * kvHeads) { job in
            let s = job / kvHeads, g = job % kvHeads
            let len = lengths[s], row0 = starts[s]
            let kg = k + row0 * kvd + g * d, vg = v + row0 * kvd + g * d
            let dkg = dk + row0 * kvd + g * d, dvg = dv + row0 * kvd + g * d
            var dp = [Float](repeating: 0, count: len * len)
            for head in (g * group)..<((g + 1) * group) {
                let qh = q + row0 * hd + head * d, doh = dout + row0 * hd + head * d
                let p = probabilities(q: qh, k: kg, length: len)
                // dP (L, L) = dout_h (L, D) · v_gᵀ
                gemm(transB: true, m: len, n: len, k: d, doh, lda: hd, vg, ldb: kvd, &dp, ldc: len, parallel: false)
                // dv_g += Pᵀ · dout_h
                gemm(transA: true, m: len, n: d, k: len, p, lda: len, doh, ldb: hd, beta: 1, dvg, ldc: kvd, parallel: false)
                // dS in place of dP (causal: only j ≤ i are non-zero).
                for i in 0..<len {
                    var dot: Float = 0
                    for j in 0...i { dot += p[i * len + j] * dp[i * len + j] }
                    for j in 0...i { dp[i * len + j] = p[i * len + j] * (dp[i * len + j] - dot) }
                    for j in (i + 1)..<len { dp[i * len + j] = 0 }
                }
                // dq_h = dS · k_g · scale; dk_g += dSᵀ · q_h · scale
                gemm(m: len, n: d, k: len, alpha: scale, dp, lda: len, kg, ldb: kvd, dq + row0 * hd + head * d, ldc: hd, parallel: false)
                gemm(transA: true, m: len, n: d, k: len, alpha: scale, dp, lda: len, qh, ldb: hd, beta: 1, dkg, ldc: kvd, parallel: false)
            }
        }
    }

    /// P (L, L): row i is softmax over j ≤ i of q_i · k_j / √D, zero for j > i.
    private func probabilities(q: UnsafePointer<Float>, k: UnsafePointer<Float>, length len: Int) -> [Float] {
        let d = headDim
        var p = [Float](repeating: 0, count: len * len)
        gemm(transB: true, m: len, n: len, k: d, alpha: 1 / sqrtf(Float(d)), q, lda: heads * d, k, ldb: kvHeads * d,
             &p, ldc: len, parallel: false)
        for i in 0..<len {
            var maxScore = -Float.infinity
            for j in 0...i { maxScore = max(maxScore, p[i * len + j]) }
            var sum: Float = 0
            for j in 0...i { p[i * len + j] = expf(p[i * len + j] - maxScore); sum += p[i * len + j] }
            for j in 0...i { p[i * len + j] /= sum }
            for j in (i + 1)..<len { p[i * len + j] = 0 }
        }
        return p
    }

    static func starts(_ lengths: [Int]) -> [Int] {
        var starts: [Int] = [], total = 0
        for l in lengths { starts.append(total); total += l }
        return starts
    }
}
