import Foundation
import Tensor
import Testing

/// Every op's backward against central finite differences of its forward. The forward
/// runs in float32, so differences use a step of 1e-2 on O(1) inputs: truncation error
/// ~1e-4 and rounding noise ~1e-5 relative, well inside the 2e-3 tolerance, while a wrong
/// term in a backward is off by O(1).
@Suite("Op gradients equal finite differences")
struct OpGradientTests {
    static func values(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<n).map { _ in (random.unit() * 2 - 1) * scale }
    }

    /// Checks d(Σ out·r)/d(input[i]) for every i of `input` against `analytic`.
    static func check(_ name: String, _ input: [Float], analytic: [Float], step: Float = 1e-2,
                      loss: ([Float]) -> Double) {
        #expect(input.count == analytic.count)
        var worst = 0.0
        for i in input.indices {
            var plus = input, minus = input
            plus[i] += step
            minus[i] -= step
            let numeric = (loss(plus) - loss(minus)) / Double(2 * step)
            let error = abs(numeric - Double(analytic[i])) / max(1, abs(numeric))
            worst = max(worst, error)
        }
        #expect(worst < 2e-3, "\(name): worst relative error \(worst)")
    }

    static func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    @Test("RMSNorm: input and weight")
    func rmsNorm() {
        let n = 3, c = 8
        let x = Self.values(n * c, seed: 1), w = Self.values(c, seed: 2).map { 1 + $0 / 2 }, r = Self.values(n * c, seed: 3)
        func forward(_ x: [Float], _ w: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * c)
            rmsNormForward(x, weight: w, rows: n, width: c, eps: 1e-5, out: &out)
            return Self.dot(out, r)
        }
        var out = [Float](repeating: 0, count: n * c), rstd = [Float](repeating: 0, count: n)
        rmsNormForward(x, weight: w, rows: n, width: c, eps: 1e-5, out: &out, rstd: &rstd)
        var dx = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: c)
        rmsNormBackward(r, x: x, weight: w, rstd: rstd, rows: n, width: c, dx: &dx, dweight: &dw)
        Self.check("dx", x, analytic: dx) { forward($0, w) }
        Self.check("dweight", w, analytic: dw) { forward(x, $0) }
    }

    @Test("RoPE at several positions")
    func rope() {
        let rope = RoPE(headDim: 8, base: 10_000), heads = 2
        let x = Self.values(heads * 8, seed: 4), r = Self.values(heads * 8, seed: 5)
        for position in [0, 3, 17] {
            func forward(_ x: [Float]) -> Double {
                var y = x
                rope.forward(&y, heads: heads, position: position)
                return Self.dot(y, r)
            }
            var dx = r
            rope.backward(&dx, heads: heads, position: position)
            Self.check("dx at \(position)", x, analytic: dx, loss: forward)
        }
    }

    @Test("causal grouped-query attention over two packed sequences: q, k and v")
    func attention() {
        let att = CausalAttention(heads: 4, kvHeads: 2, headDim: 4)
        let lengths = [5, 3], n = 8, hd = 16, kvd = 8
        let q = Self.values(n * hd, seed: 6), k = Self.values(n * kvd, seed: 7), v = Self.values(n * kvd, seed: 8)
        let r = Self.values(n * hd, seed: 9)
        func forward(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * hd)
            att.forward(q: q, k: k, v: v, lengths: lengths, out: &out)
            return Self.dot(out, r)
        }
        var dq = [Float](repeating: 0, count: n * hd), dk = [Float](repeating: 0, count: n * kvd), dv = dk
        att.backward(r, q: q, k: k, v: v, lengths: lengths, dq: &dq, dk: &dk, dv: &dv)
        Self.check("dq", q, analytic: dq) { forward($0, k, v) }
        Self.check("dk", k, analytic: dk) { forward(q, $0, v) }
        Self.check("dv", v, analytic: dv) { forward(q, k, $0) }
    }

    @Test("attention with a prefix shared by two sequences: q, k and v; each sequence sees what packing it whole gives")
    func sharedPrefixAttention() {
        let att = CausalAttention(heads: 4, kvHeads: 2, headDim: 4)
        let prefix = 3, lengths = [4, 2], n = 9, hd = 16, kvd = 8
        let q = Self.values(n * hd, seed: 16), k = Self.values(n * kvd, seed: 17), v = Self.values(n * kvd, seed: 18)
        let r = Self.values(n * hd, seed: 19)
        func forward(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * hd)
            att.forward(q: q, k: k, v: v, prefix: prefix, lengths: lengths, out: &out)
            return Self.dot(out, r)
        }
        var dq = [Float](repeating: 0, count: n * hd), dk = [Float](repeating: 0, count: n * kvd), dv = dk
        att.backward(r, q: q, k: k, v: v, prefix: prefix, lengths: lengths, dq: &dq, dk: &dk, dv: &dv)
        Self.check("dq", q, analytic: dq) { forward($0, k, v) }
        Self.check("dk", k, analytic: dk) { forward(q, $0, v) }
        Self.check("dv", v, analytic: dv) { forward(q, k, $0) }

        // The second sequence packed whole: the prefix's rows, then its own.
        let rows = Array(0..<prefix) + Array((prefix + lengths[0])..<n)
        func pick(_ x: [Float], _ width: Int) -> [Float] { rows.flatMap { x[($0 * width)..<(($0 + 1) * width)] } }
        var whole = [Float](repeating: 0, count: rows.count * hd), shared = [Float](repeating: 0, count: n * hd)
        att.forward(q: pick(q, hd), k: pick(k, kvd), v: pick(v, kvd), lengths: [rows.count], out: &whole)
        att.forward(q: q, k: k, v: v, prefix: prefix, lengths: lengths, out: &shared)
        for (i, row) in rows.enumerated() {
            for e in 0..<hd { #expect(abs(whole[i * hd + e] - shared[row * hd + e]) < 1e-6) }
        }
    }

    @Test("the causal mask: a row never depends on later rows")
    func causality() {
        let att = CausalAttention(heads: 2, kvHeads: 1, headDim: 4)
        let q = Self.values(6 * 8, seed: 10), k = Self.values(6 * 4, seed: 11), v = Self.values(6 * 4, seed: 12)
        var out = [Float](repeating: 0, count: 6 * 8)
        att.forward(q: q, k: k, v: v, lengths: [6], out: &out)
        var k2 = k, v2 = v
        for i in 16..<24 { k2[i] += 1; v2[i] -= 1 }   // change row 4 and 5
        var out2 = out
        att.forward(q: q, k: k2, v: v2, lengths: [6], out: &out2)
        #expect(Array(out[0..<32]) == Array(out2[0..<32]))
        #expect(Array(out[32...]) != Array(out2[32...]))
    }

    @Test("SwiGLU: gate and up")
    func swiglu() {
        let n = 12
        let g = Self.values(n, seed: 13, scale: 3), u = Self.values(n, seed: 14), r = Self.values(n, seed: 15)
        func forward(_ g: [Float], _ u: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n)
            swigluForward(gate: g, up: u, count: n, out: &out)
            return Self.dot(out, r)
        }
        var dg = [Float](repeating: 0, count: n), du = dg
        swigluBackward(r, gate: g, up: u, count: n, dgate: &dg, dup: &du)
        Self.check("dgate", g, analytic: dg) { forward($0, u) }
        Self.check("dup", u, analytic: du) { forward(g, $0) }
    }

    @Test("linear layer with LoRA: input, A and B (the base weight is frozen)")
    func linearWithLoRA() {
        let n = 3, inW = 8, outW = 6, rank = 2, scale: Float = 1.5
        let x = Self.values(n * inW, seed: 16), w = Self.values(outW * inW, seed: 17)
        let a = Self.values(rank * inW, seed: 18), b = Self.values(outW * rank, seed: 19), r = Self.values(n * outW, seed: 20)
        func forward(_ x: [Float], _ a: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: n * outW), u = [Float](repeating: 0, count: n * rank)
            linearForward(x, rows: n, inWidth: inW, outWidth: outW, weight: FloatWeight(w, rows: outW, cols: inW),
                          lora: LoRAFactors(a: a, b: b, rank: rank, scale: scale), out: &y, u: &u)
            return Self.dot(y, r)
        }
        var y = [Float](repeating: 0, count: n * outW), u = [Float](repeating: 0, count: n * rank)
        let lora = LoRAFactors(a: a, b: b, rank: rank, scale: scale)
        linearForward(x, rows: n, inWidth: inW, outWidth: outW, weight: FloatWeight(w, rows: outW, cols: inW), lora: lora, out: &y, u: &u)
        var dx = [Float](repeating: 0, count: n * inW), da = [Float](repeating: 0, count: rank * inW)
        var db = [Float](repeating: 0, count: outW * rank)
        linearBackward(r, x: x, u: u, rows: n, inWidth: inW, outWidth: outW, weight: FloatWeight(w, rows: outW, cols: inW), lora: lora,
                       loraGradients: LoRAGradients(a: &da, b: &db), dx: &dx)
        Self.check("dx", x, analytic: dx) { forward($0, a, b) }
        Self.check("dA", a, analytic: da) { forward(x, $0, b) }
        Self.check("dB", b, analytic: db) { forward(x, a, $0) }
    }

    @Test("softmax cross-entropy: logits")
    func crossEntropyGradient() {
        let v = 7, targets = [2, 0, 6]
        let logits = Self.values(targets.count * v, seed: 21, scale: 3)
        var d = [Float](repeating: 0, count: logits.count)
        let loss = crossEntropy(logits: logits, targets: targets, vocab: v, dlogits: &d, gradScale: 0.5).loss
        let direct = targets.enumerated().reduce(0.0) { sum, item in
            let row = logits[(item.offset * v)..<((item.offset + 1) * v)].map(Double.init)
            return sum + log(row.map(exp).reduce(0, +)) - row[item.element]
        }
        #expect(abs(loss - direct) < 1e-5)
        Self.check("dlogits", logits, analytic: d, step: 1e-3) {
            0.5 * crossEntropy(logits: $0, targets: targets, vocab: v, dlogits: nil, gradScale: 0).loss
        }
    }

    @Test("softmax cross-entropy against a teacher's distribution (distillation): loss and logits")
    func softCrossEntropyGradient() {
        let v = 7, targets = [2, 0, 6]
        let soft: [SoftTarget?] = [SoftTarget(tokens: [2, 5, 1], probabilities: [0.6, 0.3, 0.1]), nil,
                                   SoftTarget(tokens: [6], probabilities: [1])]
        let logits = Self.values(targets.count * v, seed: 24, scale: 3)
        var d = [Float](repeating: 0, count: logits.count)
        let loss = crossEntropy(logits: logits, targets: targets, soft: soft, vocab: v, dlogits: &d, gradScale: 0.5).loss
        // −Σ p log softmax: a one-token teacher equals the hard target.
        let direct = targets.indices.reduce(0.0) { sum, r in
            let row = logits[(r * v)..<((r + 1) * v)].map(Double.init)
            let lse = log(row.map(exp).reduce(0, +))
            let teacher = soft[r].map { zip($0.tokens, $0.probabilities.map(Double.init)) }.map(Array.init) ?? [(targets[r], 1.0)]
            return sum + teacher.reduce(0.0) { $0 + $1.1 * (lse - row[$1.0]) }
        }
        #expect(abs(loss - direct) < 1e-5)
        Self.check("dlogits", logits, analytic: d, step: 1e-3) {
            0.5 * crossEntropy(logits: $0, targets: targets, soft: soft, vocab: v, dlogits: nil, gradScale: 0).loss
        }
    }

    @Test("embedding lookup: repeated tokens accumulate")
    func embedding() {
        let v = 5, c = 4, tokens = [1, 3, 1]
        let table = Self.values(v * c, seed: 22), r = Self.values(tokens.count * c, seed: 23)
        var dtable = [Float](repeating: 0, count: v * c)
        embeddingBackward(r, tokens: tokens, width: c, dtable: &dtable)
        Self.check("dtable", table, analytic: dtable) { t in
            var out = [Float](repeating: 0, count: tokens.count * c)
            embeddingForward(tokens: tokens, table: t, width: c, out: &out)
            return Self.dot(out, r)
        }
    }

    @Test("pool-split gemm equals one OpenBLAS call (within rounding), for every transpose and both split directions")
    func gemmSplit() {
        for (m, n) in [(300, 40), (40, 300)] {
            let k = 64
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = Self.values(m * k, seed: 24), b = Self.values(k * n, seed: 25)
                var split = [Float](repeating: 1, count: m * n), single = split
                gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a, lda: ta ? m : k, b, ldb: tb ? k : n,
                     beta: 1, &split, ldc: n)
                gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a, lda: ta ? m : k, b, ldb: tb ? k : n,
                     beta: 1, &single, ldc: n, parallel: false)
                // Splitting changes OpenBLAS's blocking, so sums may round differently.
                let worst = zip(split, single).map { abs($0 - $1) }.max()!
                #expect(worst < 1e-5, "m \(m) n \(n) transA \(ta) transB \(tb): max |Δ| \(worst)")
            }
        }
    }
}
