import Foundation
import Tensor

/// One training sequence: its tokens and which of them the loss counts.
public struct TrainingSequence: Sendable, Equatable {
    public var tokens: [Int]
    /// lossMask[i]: token i is a target, predicted from the tokens before it (for chat
    /// data, the assistant's tokens). lossMask[0] never counts: nothing predicts it.
    public var lossMask: [Bool]
    /// Distillation targets by token index: where present, the loss at target i is the
    /// cross-entropy against this distribution instead of against token i alone.
    public var softTargets: [Int: SoftTarget] = [:]

    public init(tokens: [Int], lossMask: [Bool]) {
        precondition(tokens.count == lossMask.count)
        self.tokens = tokens
        self.lossMask = lossMask
    }

    /// How many tokens the loss counts.
    public var targetCount: Int { lossMask.dropFirst().filter { $0 }.count }
}

/// Σ of −log p(target) over a batch's target tokens, how many there were, and how many
/// the model ranks first (teacher-forced top-1 accuracy).
public struct LossSum: Sendable, Equatable {
    public var sum: Double
    public var tokens: Int
    public var correct: Int
    public init(sum: Double = 0, tokens: Int = 0, correct: Int = 0) {
        self.sum = sum
        self.tokens = tokens
        self.correct = correct
    }
    /// Mean loss per target token (nats).
    public var mean: Double { tokens > 0 ? sum / Double(tokens) : 0 }
    /// Share of target tokens that are the model's top-1 choice.
    public var accuracy: Double { tokens > 0 ? Double(correct) / Double(tokens) : 0 }
}

/// What one block's forward keeps for its backward pass. Shapes for N packed rows.
struct LayerActivations {
    var xIn: [Float]       // (N, C) the block's input
    var rstd1: [Float]     // (N)
    var h1: [Float]        // (N, C) attn_norm(xIn)
    var q: [Float]         // (N, H·D) after RoPE
    var k: [Float]         // (N, KV·D) after RoPE
    var v: [Float]         // (N, KV·D)
    var att: [Float]       // (N, H·D) attention output
    var xMid: [Float]      // (N, C) after the attention residual
    var rstd2: [Float]     // (N)
    var h2: [Float]        // (N, C) ffn_norm(xMid)
    var gate: [Float]      // (N, F) before SwiGLU
    var up: [Float]        // (N, F)
    var act: [Float]       // (N, F) silu(gate) ⊙ up
    var u: [LoRATarget: [Float]] = [:]   // (N, R) x · Aᵀ per adapted target
}

/// Sequences packed one after another: the row layout of a training pass. The tokens that
/// begin every sequence of the batch (in chat data, the system turn the template writes)
/// are packed once, as a shared prefix that each sequence's remaining rows attend to: the
/// same loss and gradients as packing each sequence whole, for fewer rows of work.
struct PackedBatch {
    let tokens: [Int]        // (N)
    let positions: [Int]     // (N) position of each row in its sequence
    /// Rows 0..<prefix: the shared prefix; then each sequence's rows after it.
    let prefix: Int
    let lengths: [Int]       // (B) rows of each sequence after the prefix
    /// Rows whose next token is a target, and those targets.
    let lossRows: [Int]
    let targets: [Int]
    /// Per target: the teacher distribution to distill, if any.
    let softTargets: [SoftTarget?]

    init(_ batch: [TrainingSequence], vocab: Int, context: Int) throws {
        for (s, seq) in batch.enumerated() {
            guard !seq.tokens.isEmpty else { throw ModelError("training sequence \(s) is empty") }
            guard seq.tokens.count <= context else {
                throw ModelError("training sequence \(s) has \(seq.tokens.count) tokens; the context length is \(context)")
            }
            for t in seq.tokens where t < 0 || t >= vocab {
                throw ModelError("token id \(t) is outside the vocabulary (0..<\(vocab))")
            }
        }
        let prefix = Self.sharedPrefix(batch)
        var tokens = Array(batch.first?.tokens.prefix(prefix) ?? [])
        var positions = Array(0..<prefix)
        var lossRows: [Int] = [], targets: [Int] = [], softTargets: [SoftTarget?] = []
        for seq in batch {
            // Token i is predicted by the row of token i − 1, which is past the prefix.
            for i in 1..<max(seq.tokens.count, 1) where seq.lossMask[i] {
                lossRows.append(tokens.count + i - 1 - prefix)
                targets.append(seq.tokens[i])
                softTargets.append(seq.softTargets[i])
            }
            tokens += seq.tokens[prefix...]
            positions += Array(prefix..<seq.tokens.count)
        }
        self.tokens = tokens
        self.positions = positions
        self.prefix = prefix
        lengths = batch.map { $0.tokens.count - prefix }
        self.lossRows = lossRows
        self.targets = targets
        self.softTargets = softTargets
    }

    /// The longest run of tokens that begins every sequence, leaving each at least one row
    /// of its own and no loss row inside the prefix; 0 for a single sequence.
    static func sharedPrefix(_ batch: [TrainingSequence]) -> Int {
        guard batch.count > 1, let first = batch.first else { return 0 }
        var length = first.tokens.count
        for seq in batch {
            let firstTarget = seq.lossMask.indices.dropFirst().first { seq.lossMask[$0] } ?? seq.tokens.count
            length = min(length, seq.tokens.count - 1, firstTarget - 1)
            var i = 0
            while i < length && seq.tokens[i] == first.tokens[i] { i += 1 }
            length = i
        }
        return max(length, 0)
    }
}

extension LlamaModel {
    /// The loss of the model with `adapter` (nil: the base) on `batch`, without gradients.
    public func loss(_ batch: [TrainingSequence], adapter: LoRAAdapter?) throws -> LossSum {
        if let adapter { try adapter.validate(for: config) }
        let packed = try PackedBatch(batch, vocab: config.vocabSize, context: config.contextLength)
        var x = embed(packed.tokens)
        for layer in layers.indices {
            x = layerForward(layer, x, packed, adapter: adapter, keep: false).out
        }
        let result = head(x, packed, gradScale: nil)
        return LossSum(sum: result.loss, tokens: packed.targets.count, correct: result.correct)
    }

    /// Forward and backward over one micro-batch: adds d(loss sum · gradScale)/d(A, B) of
    /// every adapted layer into `gradients` and returns the loss sum. The base weights are
    /// frozen and get no gradient. With `checkpointing`, only each block's input is kept
    /// and the block is recomputed during the backward pass (less memory, ~1/3 more work).
    public func accumulateGradients(_ batch: [TrainingSequence], adapter: LoRAAdapter, gradScale: Float,
                                    checkpointing: Bool, into gradients: inout LoRAAdapter) throws -> LossSum {
        try adapter.validate(for: config)
        precondition(gradients.config == adapter.config, "gradients must have the adapter's shape")
        let packed = try PackedBatch(batch, vocab: config.vocabSize, context: config.contextLength)
        var x = embed(packed.tokens)
        var saved: [LayerActivations] = []    // all blocks, or only their inputs when checkpointing
        var inputs: [[Float]] = []
        for layer in layers.indices {
            let (out, acts) = layerForward(layer, x, packed, adapter: adapter, keep: !checkpointing)
            if checkpointing { inputs.append(x) } else { saved.append(acts!) }
            x = out
        }
        let (loss, correct, dxFinal) = head(x, packed, gradScale: gradScale)
        var dx = dxFinal!
        for layer in layers.indices.reversed() {
            let acts = checkpointing
                ? layerForward(layer, inputs.removeLast(), packed, adapter: adapter, keep: true).activations!
                : saved.removeLast()
            dx = layerBackward(layer, dx, acts, packed, adapter: adapter, gradients: &gradients)
        }
        return LossSum(sum: loss, tokens: packed.targets.count, correct: correct)
    }

    /// (N, C) embedding rows of the tokens (the frozen table: no gradient flows into it).
    private func embed(_ tokens: [Int]) -> [Float] {
        let c = config.width
        var x = [Float](repeating: 0, count: tokens.count * c)
        x.withUnsafeMutableBufferPointer { xp in
            for (i, t) in tokens.enumerated() { embedding.row(t, into: xp.baseAddress! + i * c) }
        }
        return x
    }

    /// One block over all rows: x + attention(norm(x)), then + SwiGLU MLP(norm(·)).
    private func layerForward(_ layer: Int, _ xIn: [Float], _ p: PackedBatch, adapter: LoRAAdapter?,
                              keep: Bool) -> (out: [Float], activations: LayerActivations?) {
        let n = p.tokens.count, c = config.width, f = config.ffnWidth
        let hd = config.heads * config.headDim, kvd = config.kvHeads * config.headDim
        let w = layers[layer]
        var a = LayerActivations(
            xIn: xIn, rstd1: zeros(n), h1: zeros(n * c), q: zeros(n * hd), k: zeros(n * kvd), v: zeros(n * kvd),
            att: zeros(n * hd), xMid: zeros(n * c), rstd2: zeros(n), h2: zeros(n * c),
            gate: zeros(n * f), up: zeros(n * f), act: zeros(n * f))
        /// y = x · Wᵀ (+ the adapter's update); returns x · Aᵀ when the target is adapted.
        func linear(_ target: LoRATarget, _ m: QuantizedMatrix, _ x: [Float], _ y: inout [Float]) -> [Float]? {
            let key = LoRAKey(layer: layer, target: target)
            return OpProfile.measure("matmul.\(target)", layer: layer, flops: 2 * Double(n * m.rows * m.cols)) {
                (adapter ?? LoRAAdapter.none).withFactors(key) { factors in
                    guard let factors else {
                        linearForward(x, rows: n, inWidth: m.cols, outWidth: m.rows, weight: m, lora: nil, out: &y, u: nil)
                        return nil
                    }
                    var u = zeros(n * factors.rank)
                    linearForward(x, rows: n, inWidth: m.cols, outWidth: m.rows, weight: m, lora: factors, out: &y, u: &u)
                    return u
                }
            }
        }
        OpProfile.measure("rmsnorm", layer: layer) {
            rmsNormForward(xIn, weight: w.attnNorm, rows: n, width: c, eps: config.rmsEpsilon, out: &a.h1, rstd: &a.rstd1)
        }
        a.u[.q] = linear(.q, w.q, a.h1, &a.q)
        a.u[.k] = linear(.k, w.k, a.h1, &a.k)
        a.u[.v] = linear(.v, w.v, a.h1, &a.v)
        addBias(w.qBias, rows: n, to: &a.q)
        addBias(w.kBias, rows: n, to: &a.k)
        addBias(w.vBias, rows: n, to: &a.v)
        OpProfile.measure("rope", layer: layer) {
            a.q.withUnsafeMutableBufferPointer { qp in
                a.k.withUnsafeMutableBufferPointer { kp in
                    Parallel.ranges(n) { rows in
                        for i in rows {
                            rope.forward(qp.baseAddress! + i * hd, heads: config.heads, position: p.positions[i])
                            rope.forward(kp.baseAddress! + i * kvd, heads: config.kvHeads, position: p.positions[i])
                        }
                    }
                }
            }
        }
        OpProfile.measure("attention", layer: layer) {
            attention.forward(q: a.q, k: a.k, v: a.v, prefix: p.prefix, lengths: p.lengths, out: &a.att)
        }
        var proj = zeros(n * c)
        a.u[.o] = linear(.o, w.o, a.att, &proj)
        for i in 0..<(n * c) { a.xMid[i] = xIn[i] + proj[i] }
        OpProfile.measure("rmsnorm", layer: layer) {
            rmsNormForward(a.xMid, weight: w.ffnNorm, rows: n, width: c, eps: config.rmsEpsilon, out: &a.h2, rstd: &a.rstd2)
        }
        a.u[.gate] = linear(.gate, w.gate, a.h2, &a.gate)
        a.u[.up] = linear(.up, w.up, a.h2, &a.up)
        OpProfile.measure("swiglu", layer: layer) { swigluForward(gate: a.gate, up: a.up, count: n * f, out: &a.act) }
        a.u[.down] = linear(.down, w.down, a.act, &proj)
        var out = a.xMid
        for i in 0..<(n * c) { out[i] += proj[i] }
        return (out, keep ? a : nil)
    }

    /// Backward of `layerForward`: from d(out) to d(xIn), adding LoRA gradients on the way.
    private func layerBackward(_ layer: Int, _ dOut: [Float], _ a: LayerActivations, _ p: PackedBatch,
                               adapter: LoRAAdapter, gradients: inout LoRAAdapter) -> [Float] {
        let n = p.tokens.count, c = config.width, f = config.ffnWidth
        let hd = config.heads * config.headDim, kvd = config.kvHeads * config.headDim
        let w = layers[layer]
        func linearBack(_ target: LoRATarget, _ m: QuantizedMatrix, _ dy: [Float], _ x: [Float], _ dx: inout [Float]) {
            let key = LoRAKey(layer: layer, target: target)
            // Taken out of the dictionary while written, so the arrays are not copied.
            var g = gradients.weights.removeValue(forKey: key)
            OpProfile.measure("matmul.\(target).backward", layer: layer, flops: 2 * Double(n * m.rows * m.cols)) {
                adapter.withFactors(key) { factors in
                    guard factors != nil, var gr = g, let u = a.u[target] else {
                        linearBackward(dy, x: x, u: nil, rows: n, inWidth: m.cols, outWidth: m.rows, weight: m,
                                       lora: nil, loraGradients: nil, dx: &dx)
                        return
                    }
                    gr.a.withUnsafeMutableBufferPointer { ga in
                        gr.b.withUnsafeMutableBufferPointer { gb in
                            linearBackward(dy, x: x, u: u, rows: n, inWidth: m.cols, outWidth: m.rows, weight: m,
                                           lora: factors, loraGradients: LoRAGradients(a: ga.baseAddress!, b: gb.baseAddress!),
                                           dx: &dx)
                        }
                    }
                    g = gr
                }
            }
            if let g { gradients.weights[key] = g }
        }
        // out = xMid + down(act)
        var dxMid = dOut
        var dAct = zeros(n * f)
        linearBack(.down, w.down, dOut, a.act, &dAct)
        var dGate = zeros(n * f), dUp = zeros(n * f)
        OpProfile.measure("swiglu.backward", layer: layer) { swigluBackward(dAct, gate: a.gate, up: a.up, count: n * f, dgate: &dGate, dup: &dUp) }
        var dh2 = zeros(n * c)
        linearBack(.gate, w.gate, dGate, a.h2, &dh2)
        linearBack(.up, w.up, dUp, a.h2, &dh2)
        OpProfile.measure("rmsnorm.backward", layer: layer) {
            rmsNormBackward(dh2, x: a.xMid, weight: w.ffnNorm, rstd: a.rstd2, rows: n, width: c, dx: &dxMid)
        }
        // xMid = xIn + o(att)
        var dAtt = zeros(n * hd)
        linearBack(.o, w.o, dxMid, a.att, &dAtt)
        var dq = zeros(n * hd), dk = zeros(n * kvd), dv = zeros(n * kvd)
        OpProfile.measure("attention.backward", layer: layer) {
            attention.backward(dAtt, q: a.q, k: a.k, v: a.v, prefix: p.prefix, lengths: p.lengths, dq: &dq, dk: &dk, dv: &dv)
        }
        OpProfile.measure("rope.backward", layer: layer) {
            dq.withUnsafeMutableBufferPointer { qp in
                dk.withUnsafeMutableBufferPointer { kp in
                    Parallel.ranges(n) { rows in
                        for i in rows {
                            rope.backward(qp.baseAddress! + i * hd, heads: config.heads, position: p.positions[i])
                            rope.backward(kp.baseAddress! + i * kvd, heads: config.kvHeads, position: p.positions[i])
                        }
                    }
                }
            }
        }
        var dh1 = zeros(n * c)
        linearBack(.q, w.q, dq, a.h1, &dh1)
        linearBack(.k, w.k, dk, a.h1, &dh1)
        linearBack(.v, w.v, dv, a.h1, &dh1)
        var dxIn = dxMid
        OpProfile.measure("rmsnorm.backward", layer: layer) {
            rmsNormBackward(dh1, x: a.xIn, weight: w.attnNorm, rstd: a.rstd1, rows: n, width: c, dx: &dxIn)
        }
        return dxIn
    }

    /// Output norm, head and cross-entropy on the loss rows only, in chunks so that the
    /// (rows, V) logits never exist for the whole batch. Returns the loss sum and, when
    /// `gradScale` is given, d(loss sum · gradScale)/d(x) for all N rows; also how many
    /// targets are the top-1 logit.
    private func head(_ x: [Float], _ p: PackedBatch, gradScale: Float?) -> (loss: Double, correct: Int, dx: [Float]?) {
        let c = config.width, v = config.vocabSize, m = p.lossRows.count
        // The products of the forward and (when training) the backward pass.
        let flops = 2 * Double(m * v * c) * (gradScale == nil ? 1 : 2)
        return OpProfile.measure(gradScale == nil ? "head" : "head+backward", flops: flops) { headPass(x, p, gradScale: gradScale) }
    }

    private func headPass(_ x: [Float], _ p: PackedBatch, gradScale: Float?) -> (loss: Double, correct: Int, dx: [Float]?) {
        let c = config.width, v = config.vocabSize, m = p.lossRows.count
        var dx: [Float]? = gradScale.map { _ in zeros(x.count) }
        guard m > 0 else { return (0, 0, dx) }
        var picked = zeros(m * c)
        for (j, r) in p.lossRows.enumerated() {
            for e in 0..<c { picked[j * c + e] = x[r * c + e] }
        }
        var normed = zeros(m * c), rstd = zeros(m)
        rmsNormForward(picked, weight: outputNorm, rows: m, width: c, eps: config.rmsEpsilon, out: &normed, rstd: &rstd)
        var dNormed = zeros(m * c)
        var loss = 0.0, correct = 0
        let chunk = 128   // (128, V) logits: 25 MB, under glibc's largest mmap threshold
        var logits = zeros(min(chunk, m) * v)
        normed.withUnsafeBufferPointer { np in
            for start in stride(from: 0, to: m, by: chunk) {
                let rows = min(chunk, m - start)
                logits.withUnsafeMutableBufferPointer { lp in
                    let l = lp.baseAddress!
                    output.product(np.baseAddress! + start * c, count: rows, into: l)
                    let targets = Array(p.targets[start..<(start + rows)])
                    let soft = p.softTargets.contains { $0 != nil } ? Array(p.softTargets[start..<(start + rows)]) : nil
                    let part = crossEntropy(logits: l, targets: targets, soft: soft, vocab: v,
                                            dlogits: gradScale == nil ? nil : l, gradScale: gradScale ?? 0)
                    loss += part.loss
                    correct += part.correct
                    guard gradScale != nil else { return }
                    dNormed.withUnsafeMutableBufferPointer { dp in
                        output.accumulateTransposedProduct(l, count: rows, into: dp.baseAddress! + start * c)
                    }
                }
            }
        }
        guard gradScale != nil else { return (loss, correct, nil) }
        var dPicked = zeros(m * c)
        rmsNormBackward(dNormed, x: picked, weight: outputNorm, rstd: rstd, rows: m, width: c, dx: &dPicked)
        for (j, r) in p.lossRows.enumerated() {
            for e in 0..<c { dx![r * c + e] += dPicked[j * c + e] }
        }
        return (loss, correct, dx)
    }

    private var attention: CausalAttention {
        CausalAttention(heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim)
    }
}

private func zeros(_ n: Int) -> [Float] { [Float](repeating: 0, count: n) }

extension LoRAAdapter {
    /// An adapter adapting nothing, for code paths shared with the base model.
    static let none = LoRAAdapter(config: LoRAConfig(rank: 1, alpha: 1, targets: []), layers: 0, weights: [:])
}
