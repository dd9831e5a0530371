import CKernels
import Foundation

/// One sequence's part of a batched forward pass.
public struct SequenceInput {
    /// New tokens, appended after what `cache` holds.
    public var tokens: [Int]
    public var cache: KVCache
    /// Return logits for every new token (true) or only the last (false).
    public var allLogits: Bool

    public init(tokens: [Int], cache: KVCache, allLogits: Bool = false) {
        self.tokens = tokens
        self.cache = cache
        self.allLogits = allLogits
    }
}

extension LlamaModel {
    /// Runs new tokens of several sequences through the model in one pass: the linear
    /// layers see all rows together, attention runs per sequence over its own cache.
    /// Returns per sequence the logits (V each) of its last token, or of all its tokens.
    public func forward(_ batch: [SequenceInput], mode: MatmulMode = .fast) throws -> [[[Float]]] {
        let c = config.width, d = config.headDim, h = config.heads, kv = config.kvHeads
        let f = config.ffnWidth, v = config.vocabSize
        var rows: [(seq: Int, pos: Int)] = []
        for (s, input) in batch.enumerated() {
            guard !input.tokens.isEmpty else { throw ModelError("sequence \(s) has no new tokens") }
            guard input.cache.count + input.tokens.count <= input.cache.capacity else {
                throw ModelError("sequence \(s) would hold \(input.cache.count + input.tokens.count) tokens; its cache holds \(input.cache.capacity) (context length \(config.contextLength))")
            }
            for t in input.tokens {
                guard t >= 0 && t < v else { throw ModelError("token id \(t) is outside the vocabulary (0..<\(v))") }
            }
            for i in 0..<input.tokens.count { rows.append((s, input.cache.count + i)) }
        }
        let n = rows.count   // N rows in this pass
        // Rows of prompt chunks (several new tokens) and of single decode tokens take
        // different kernels in the fast mode; which one depends only on the sequence.
        var chunkRows: [Int] = [], singleRows: [Int] = []
        for (i, row) in rows.enumerated() {
            if batch[row.seq].tokens.count > 1 { chunkRows.append(i) } else { singleRows.append(i) }
        }
        let plan = MatmulPlan(mode: mode, chunkRows: chunkRows, singleRows: singleRows, total: n)
        var x = [Float](repeating: 0, count: n * c)          // (N, C) residual stream
        var hidden = [Float](repeating: 0, count: n * c)     // (N, C) normed
        var q = [Float](repeating: 0, count: n * h * d)      // (N, H·D)
        var k = [Float](repeating: 0, count: n * kv * d)     // (N, KV·D)
        var vv = [Float](repeating: 0, count: n * kv * d)    // (N, KV·D)
        var att = [Float](repeating: 0, count: n * h * d)    // (N, H·D)
        var proj = [Float](repeating: 0, count: n * c)       // (N, C)
        var gate = [Float](repeating: 0, count: n * f)       // (N, F)
        var up = [Float](repeating: 0, count: n * f)         // (N, F)

        let tokens = batch.flatMap(\.tokens)
        x.withUnsafeMutableBufferPointer { xp in
            for (i, t) in tokens.enumerated() { embedding.row(t, into: xp.baseAddress! + i * c) }
        }
        for layer in layers.indices {
            let w = layers[layer]
            rmsNormForward(x, weight: w.attnNorm, into: &hidden, rows: n, width: c)
            multiply(w.q, hidden, &q, plan)
            multiply(w.k, hidden, &k, plan)
            multiply(w.v, hidden, &vv, plan)
            for (i, row) in rows.enumerated() {
                ropeForward(&q, offset: i * h * d, heads: h, position: row.pos)
                ropeForward(&k, offset: i * kv * d, heads: kv, position: row.pos)
            }
            // Store this pass's keys and values, then attend.
            for (i, row) in rows.enumerated() {
                let cache = batch[row.seq].cache
                let dst = row.pos * cache.kvWidth
                for j in 0..<(kv * d) {
                    cache.keys[layer][dst + j] = k[i * kv * d + j]
                    cache.values[layer][dst + j] = vv[i * kv * d + j]
                }
            }
            attentionForward(rows: rows, batch: batch, layer: layer, q: q, into: &att)
            multiply(w.o, att, &proj, plan)
            for i in 0..<(n * c) { x[i] += proj[i] }
            rmsNormForward(x, weight: w.ffnNorm, into: &hidden, rows: n, width: c)
            multiply(w.gate, hidden, &gate, plan)
            multiply(w.up, hidden, &up, plan)
            for i in 0..<(n * f) { gate[i] = gate[i] / (1 + expf(-gate[i])) * up[i] }  // SwiGLU
            multiply(w.down, gate, &proj, plan)
            for i in 0..<(n * c) { x[i] += proj[i] }
        }
        for input in batch { input.cache.advance(by: input.tokens.count) }

        // Output head only on the rows whose logits are wanted.
        var wanted: [Int] = []
        var start = 0
        for input in batch {
            let count = input.tokens.count
            wanted += input.allLogits ? Array(start..<(start + count)) : [start + count - 1]
            start += count
        }
        var picked = [Float](repeating: 0, count: wanted.count * c)
        for (j, i) in wanted.enumerated() {
            for e in 0..<c { picked[j * c + e] = x[i * c + e] }
        }
        var normed = [Float](repeating: 0, count: wanted.count * c)
        rmsNormForward(picked, weight: outputNorm, into: &normed, rows: wanted.count, width: c)
        var logits = [Float](repeating: 0, count: wanted.count * v)
        // The head follows the same rule per wanted row.
        var headChunk: [Int] = [], headSingle: [Int] = []
        var r = 0
        for input in batch {
            for _ in 0..<(input.allLogits ? input.tokens.count : 1) {
                if input.tokens.count > 1 { headChunk.append(r) } else { headSingle.append(r) }
                r += 1
            }
        }
        multiply(output, normed, &logits, MatmulPlan(mode: mode, chunkRows: headChunk, singleRows: headSingle, total: wanted.count))
        var result: [[[Float]]] = []
        var next = 0
        for input in batch {
            let count = input.allLogits ? input.tokens.count : 1
            result.append((0..<count).map { j in Array(logits[((next + j) * v)..<((next + j + 1) * v)]) })
            next += count
        }
        return result
    }

    /// out = x · wᵀ for all rows of the pass, each group of rows with its kernel.
    private func multiply(_ w: QuantizedMatrix, _ x: [Float], _ out: inout [Float], _ plan: MatmulPlan) {
        let inWidth = w.cols, outWidth = w.rows
        for (rows, kernel) in plan.groups {
            if rows.count == plan.total {
                x.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBufferPointer { op in
                        w.multiply(xp.baseAddress!, count: rows.count, into: op.baseAddress!, kernel: kernel)
                    }
                }
                continue
            }
            var xs = [Float](repeating: 0, count: rows.count * inWidth)
            for (j, i) in rows.enumerated() {
                for e in 0..<inWidth { xs[j * inWidth + e] = x[i * inWidth + e] }
            }
            var ys = [Float](repeating: 0, count: rows.count * outWidth)
            xs.withUnsafeBufferPointer { xp in
                ys.withUnsafeMutableBufferPointer { yp in
                    w.multiply(xp.baseAddress!, count: rows.count, into: yp.baseAddress!, kernel: kernel)
                }
            }
            for (j, i) in rows.enumerated() {
                for e in 0..<outWidth { out[i * outWidth + e] = ys[j * outWidth + e] }
            }
        }
    }

    /// out[r] = x[r] / sqrt(mean(x[r]²) + eps) · weight.   x, out: (rows, width)
    func rmsNormForward(_ x: [Float], weight: [Float], into out: inout [Float], rows: Int, width: Int) {
        for r in 0..<rows {
            var ss: Float = 0
            for i in 0..<width { ss += x[r * width + i] * x[r * width + i] }
            let rstd = 1 / sqrtf(ss / Float(width) + config.rmsEpsilon)
            for i in 0..<width { out[r * width + i] = x[r * width + i] * rstd * weight[i] }
        }
    }

    /// Rotates pairs (2i, 2i+1) of each head by position·invFreq[i] (GGUF stores q and k
    /// rows in the order that makes this equal to Hugging Face's rotate_half).
    func ropeForward(_ x: inout [Float], offset: Int, heads: Int, position: Int) {
        let d = config.headDim
        for i in 0..<(d / 2) {
            let angle = Float(position) * invFreq[i]
            let cs = cosf(angle), sn = sinf(angle)
            for head in 0..<heads {
                let p = offset + head * d + 2 * i
                let a = x[p], b = x[p + 1]
                x[p] = a * cs - b * sn
                x[p + 1] = a * sn + b * cs
            }
        }
    }

    /// Causal grouped-query attention of each row over its sequence's cache up to its own
    /// position.   q, out: (N, H·D)
    func attentionForward(rows: [(seq: Int, pos: Int)], batch: [SequenceInput], layer: Int, q: [Float], into out: inout [Float]) {
        let d = config.headDim, h = config.heads, group = config.heads / config.kvHeads
        let scale = 1 / sqrtf(Float(d))
        out.withUnsafeMutableBufferPointer { op in
            q.withUnsafeBufferPointer { qp in
                Parallel.for(rows.count * h) { job in
                    let i = job / h, head = job % h
                    let row = rows[i]
                    let cache = batch[row.seq].cache
                    let kvHead = head / group
                    let length = row.pos + 1
                    var scores = [Float](repeating: 0, count: length)
                    cache.keys[layer].withUnsafeBufferPointer { kp in
                        let qrow = qp.baseAddress! + i * h * d + head * d
                        for t in 0..<length {
                            scores[t] = hone_dot_f32(qrow, kp.baseAddress! + t * cache.kvWidth + kvHead * d, d) * scale
                        }
                    }
                    let maxScore = scores.max()!
                    var sum: Float = 0
                    for t in 0..<length { scores[t] = expf(scores[t] - maxScore); sum += scores[t] }
                    let o = op.baseAddress! + i * h * d + head * d
                    for e in 0..<d { o[e] = 0 }
                    cache.values[layer].withUnsafeBufferPointer { vp in
                        for t in 0..<length {
                            let p = scores[t] / sum
                            let vrow = vp.baseAddress! + t * cache.kvWidth + kvHead * d
                            for e in 0..<d { o[e] += p * vrow[e] }
                        }
                    }
                }
            }
        }
    }
}

/// Which rows of a pass take which kernel.
struct MatmulPlan {
    let groups: [([Int], QuantizedMatrix.Kernel)]
    let total: Int

    init(mode: MatmulMode, chunkRows: [Int], singleRows: [Int], total: Int) {
        self.total = total
        switch mode {
        case .exact:
            groups = [(Array(0..<total), .float)]
        case .fast:
            groups = [(chunkRows, .dequantizedGEMM), (singleRows, .int16)].filter { !$0.0.isEmpty }
        }
    }
}
