import CKernels
import Foundation
import Tensor

/// One sequence's part of a batched forward pass.
public struct SequenceInput {
    /// New tokens, appended after what `cache` holds.
    public var tokens: [Int]
    public var cache: KVCache
    /// Return logits for every new token (true) or only the last (false).
    public var allLogits: Bool
    /// The LoRA adapter this sequence runs with (unmerged), or nil for the base model.
    /// Sequences of one batch may use different adapters.
    public var adapter: LoRAAdapter?

    public init(tokens: [Int], cache: KVCache, allLogits: Bool = false, adapter: LoRAAdapter? = nil) {
        self.tokens = tokens
        self.cache = cache
        self.allLogits = allLogits
        self.adapter = adapter
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
        let loraRuns = try loraRuns(batch)
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
        let eps = config.rmsEpsilon
        let angles = rows.map { rope.angles($0.pos) }
        for layer in layers.indices {
            let w = layers[layer]
            func linear(_ target: LoRATarget, _ m: QuantizedMatrix, _ input: [Float], _ out: inout [Float]) {
                OpProfile.measure("matmul.\(target)", layer: layer, flops: 2 * Double(n * m.rows * m.cols), bytes: Double(m.rows * m.rowBytes)) {
                    multiply(m, input, &out, plan)
                }
                OpProfile.measure("lora", layer: layer) {
                    addLoRA(LoRAKey(layer: layer, target: target), loraRuns, input, &out, inWidth: m.cols, outWidth: m.rows)
                }
            }
            /// Several products of one input: fused in a decode-only pass of quantized weights.
            func linears(_ targets: [(LoRATarget, QuantizedMatrix)], _ input: [Float], _ a: inout [Float], _ b: inout [Float], _ c3: inout [Float]) {
                guard plan.fusable, targets.allSatisfy({ !$0.1.isFloatType }) else {
                    linear(targets[0].0, targets[0].1, input, &a)
                    linear(targets[1].0, targets[1].1, input, &b)
                    if targets.count > 2 { linear(targets[2].0, targets[2].1, input, &c3) }
                    return
                }
                let name = targets.map { "\($0.0)" }.joined(separator: "+")
                let flops = targets.reduce(0.0) { $0 + 2 * Double(n * $1.1.rows * $1.1.cols) }
                let bytes = targets.reduce(0.0) { $0 + Double($1.1.rows * $1.1.rowBytes) }
                OpProfile.measure("matmul.\(name)", layer: layer, flops: flops, bytes: bytes) {
                    input.withUnsafeBufferPointer { xp in
                        a.withUnsafeMutableBufferPointer { ap in
                            b.withUnsafeMutableBufferPointer { bp in
                                c3.withUnsafeMutableBufferPointer { cp in
                                    let outs = [ap.baseAddress!, bp.baseAddress!] + (targets.count > 2 ? [cp.baseAddress!] : [])
                                    QuantizedMatrix.multiply(targets.map(\.1), xp.baseAddress!, count: n, into: outs)
                                }
                            }
                        }
                    }
                }
                OpProfile.measure("lora", layer: layer) {
                    addLoRA(LoRAKey(layer: layer, target: targets[0].0), loraRuns, input, &a, inWidth: targets[0].1.cols, outWidth: targets[0].1.rows)
                    addLoRA(LoRAKey(layer: layer, target: targets[1].0), loraRuns, input, &b, inWidth: targets[1].1.cols, outWidth: targets[1].1.rows)
                    if targets.count > 2 {
                        addLoRA(LoRAKey(layer: layer, target: targets[2].0), loraRuns, input, &c3, inWidth: targets[2].1.cols, outWidth: targets[2].1.rows)
                    }
                }
            }
            OpProfile.measure("rmsnorm", layer: layer) { rmsNormForward(x, weight: w.attnNorm, rows: n, width: c, eps: eps, out: &hidden) }
            linears([(.q, w.q), (.k, w.k), (.v, w.v)], hidden, &q, &k, &vv)
            addBias(w.qBias, rows: n, to: &q)
            addBias(w.kBias, rows: n, to: &k)
            addBias(w.vBias, rows: n, to: &vv)
            OpProfile.measure("rope", layer: layer) {
                q.withUnsafeMutableBufferPointer { qp in
                    k.withUnsafeMutableBufferPointer { kp in
                        for i in rows.indices {
                            rope.forward(qp.baseAddress! + i * h * d, heads: h, angles: angles[i])
                            rope.forward(kp.baseAddress! + i * kv * d, heads: kv, angles: angles[i])
                        }
                    }
                }
            }
            // Store this pass's keys and values, then attend.
            k.withUnsafeBufferPointer { kp in
                vv.withUnsafeBufferPointer { vp in
                    for (i, row) in rows.enumerated() {
                        batch[row.seq].cache.store(layer: layer, position: row.pos, keys: kp.baseAddress! + i * kv * d,
                                                   values: vp.baseAddress! + i * kv * d)
                    }
                }
            }
            OpProfile.measure("attention", layer: layer) { attentionForward(rows: rows, batch: batch, layer: layer, q: q, into: &att) }
            linear(.o, w.o, att, &proj)
            for i in 0..<(n * c) { x[i] += proj[i] }
            OpProfile.measure("rmsnorm", layer: layer) { rmsNormForward(x, weight: w.ffnNorm, rows: n, width: c, eps: eps, out: &hidden) }
            var unused: [Float] = []
            linears([(.gate, w.gate), (.up, w.up)], hidden, &gate, &up, &unused)
            OpProfile.measure("swiglu", layer: layer) {
                gate.withUnsafeMutableBufferPointer { g in swigluForward(gate: g.baseAddress!, up: up, count: n * f, out: g.baseAddress!) }
            }
            linear(.down, w.down, gate, &proj)
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
        rmsNormForward(picked, weight: outputNorm, rows: wanted.count, width: c, eps: eps, out: &normed)
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
        OpProfile.measure("head", flops: 2 * Double(wanted.count * v * c), bytes: Double(output.rows * output.rowBytes)) {
            multiply(output, normed, &logits, MatmulPlan(mode: mode, chunkRows: headChunk, singleRows: headSingle, total: wanted.count))
        }
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

    /// out += scale · (x · Aᵀ) · Bᵀ on the rows of each sequence that runs with an adapter
    /// adapting `key`: two GEMMs per sequence (a new token is a one-row GEMM), so a row's
    /// result depends only on its sequence, never on the batch. A token once took dot
    /// products, a rank-long one per output: 16 sequences of a rank-16 adapter spent 62-67 ms
    /// a step in them, above the 34-38 ms of the whole base step, against 21-26 ms as GEMMs
    /// (`honebench profile`, decode16lora, release). Sequences run one after another: spread
    /// over the pool (14 ms on a quiet machine) they took 110-120 ms while another process
    /// held a core, as the learner's training does during updates.
    /// The rows of `batch` that run with an adapter, each validated once: neighbouring
    /// sequences with one prepared adapter (`LoRAAdapter.preparedForInference()`, e.g. 16
    /// clients of one version, or the learner's checks) form one run, whose rows take the
    /// LoRA kernel in one call. Checking each sequence's adapter at every layer and target
    /// was ~1/3 of the LoRA time of a 16-sequence step.
    private func loraRuns(_ batch: [SequenceInput]) throws -> [(rows: Range<Int>, adapter: LoRAAdapter)] {
        var runs: [(rows: Range<Int>, adapter: LoRAAdapter)] = []
        var row = 0
        for input in batch {
            defer { row += input.tokens.count }
            guard let adapter = input.adapter else { continue }
            let rows = row..<(row + input.tokens.count)
            if let last = runs.last, last.rows.upperBound == row, let id = adapter.inferenceID, id == last.adapter.inferenceID {
                runs[runs.count - 1].rows = last.rows.lowerBound..<rows.upperBound
            } else {
                try adapter.validate(for: config)
                runs.append((rows, adapter))
            }
        }
        return runs
    }

    /// out += each run's LoRA update of its rows of x for `key`.
    private func addLoRA(_ key: LoRAKey, _ runs: [(rows: Range<Int>, adapter: LoRAAdapter)], _ x: [Float], _ out: inout [Float],
                         inWidth: Int, outWidth: Int) {
        guard !runs.isEmpty else { return }
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                for run in runs {
                    run.adapter.withFactors(key) { factors in
                        guard let f = factors else { return }
                        // Each row's result is one fixed sequence of operations, so a run's rows
                        // may be split over the threads (in the kernel's blocks of four) and a
                        // sequence's bits still do not depend on its batch.
                        let blocks = (run.rows.count + 3) / 4, parts = run.rows.count >= 8 ? min(Parallel.threads, blocks) : 1
                        func part(_ i: Int) {
                            let blockRange = Parallel.range(i, of: parts, total: blocks)
                            let first = run.rows.lowerBound + 4 * blockRange.lowerBound
                            let count = min(run.rows.upperBound, run.rows.lowerBound + 4 * blockRange.upperBound) - first
                            guard count > 0 else { return }
                            hone_lora_add(xp.baseAddress! + first * inWidth, count, inWidth, f.a, Int32(f.rank), f.b, f.bt, outWidth, f.scale,
                                          op.baseAddress! + first * outWidth)
                        }
                        if parts > 1 { Parallel.for(parts, part) } else { part(0) }
                    }
                }
            }
        }
    }

    /// Causal grouped-query attention of each row over its sequence's cache up to its own
    /// position.   q, out: (N, H·D)
    func attentionForward(rows: [(seq: Int, pos: Int)], batch: [SequenceInput], layer: Int, q: [Float], into out: inout [Float]) {
        let d = config.headDim, h = config.heads, kvHeads = config.kvHeads, group = config.heads / config.kvHeads
        let scale = 1 / sqrtf(Float(d))
        out.withUnsafeMutableBufferPointer { op in
            q.withUnsafeBufferPointer { qp in
                // One job per (row, KV head): its query heads share one read of the keys and
                // values, and the scores live on the stack (a job per query head with an
                // array of its own cost more than the arithmetic at decode lengths).
                Parallel.for(rows.count * kvHeads) { job in
                    let i = job / kvHeads, kvHead = job % kvHeads
                    let row = rows[i]
                    let cache = batch[row.seq].cache
                    let length = row.pos + 1, width = cache.kvWidth
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: group * length) { scores in
                        cache.keys[layer].withUnsafeBufferPointer { kp in
                            cache.values[layer].withUnsafeBufferPointer { vp in
                                let first = (i * h + kvHead * group) * d
                                hone_attend_cached(qp.baseAddress! + first, Int32(group), Int32(d), kp.baseAddress! + kvHead * d,
                                                   vp.baseAddress! + kvHead * d, width, Int32(length), scale, scores.baseAddress!,
                                                   op.baseAddress! + first)
                            }
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
    /// Every row takes the int16 kernel (a decode step): products of one input may share
    /// its quantization and parallel loop.
    var fusable: Bool { groups.count == 1 && groups[0].1 == .int16 }

    init(mode: MatmulMode, chunkRows: [Int], singleRows: [Int], total: Int) {
        self.total = total
        switch mode {
        case .exact:
            groups = [(Array(0..<total), .float)]
        case .fast where KernelLevel.active.batchesRows:
            groups = [(Array(0..<total), .int16)]
        case .fast:
            groups = [(chunkRows, .dequantizedGEMM), (singleRows, .int16)].filter { !$0.0.isEmpty }
        }
    }
}
