import CKernels
import Foundation
import GGUF
import Tensor
import Testing

@Suite("C kernels: every level this CPU runs equals the reference", .serialized)
struct KernelTests {
    /// The SIMD levels to hold to the reference: each the CPU runs, up to the one in use
    /// (`HONE_KERNELS=avx2` on an AVX-512 machine tests what an AVX2-only machine runs).
    static let fastLevels = KernelLevel.allCases.filter { $0 > .reference && $0 <= .active }

    @Test("HONE_KERNELS picks the level in use; the CPU runs it")
    func levelFollowsEnvironment() {
        #expect(KernelLevel.active <= KernelLevel.cpu)
        if let asked = ProcessInfo.processInfo.environment["HONE_KERNELS"], !asked.isEmpty {
            #expect(KernelLevel.active.description == asked)
        } else {
            #expect(KernelLevel.active == KernelLevel.cpu)
        }
        // A level above the CPU's is refused and changes nothing.
        if KernelLevel.cpu < .avx512 {
            #expect(hone_kernels_use(KernelLevel.avx512.rawValue) == -1)
            #expect(KernelLevel.active <= KernelLevel.cpu)
        }
    }

    /// Deterministic pseudo-random floats in [-scale, scale].
    static func values(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// Bytes of `n` values of `type` (the GGUF reader's block sizes, from CKernels' layouts).
    static func bytes(_ type: Int32, _ n: Int) -> Int { GGMLType(rawValue: UInt32(type))!.bytes(for: n) }

    static func quantized(_ type: Int32, _ x: [Float]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.bytes(type, x.count))
        _ = x.withUnsafeBufferPointer { src in out.withUnsafeMutableBytes { hone_quantize(type, src.baseAddress, $0.baseAddress, x.count) } }
        return out
    }

    static func dequantized(_ type: Int32, _ w: [UInt8], _ n: Int) -> [Float] {
        var out = [Float](repeating: 0, count: n)
        _ = w.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { hone_dequantize(type, src.baseAddress, $0.baseAddress, n) } }
        return out
    }

    static func dotQ(_ type: Int32, _ w: [UInt8], _ x: [Float]) -> Float {
        let n = x.count
        var q = [Int16](repeating: 0, count: n)
        var scales = [hone_act_scale](repeating: hone_act_scale(), count: n / 32)
        x.withUnsafeBufferPointer { xp in
            q.withUnsafeMutableBufferPointer { qp in
                scales.withUnsafeMutableBufferPointer { hone_quantize_activations(xp.baseAddress, n, qp.baseAddress, $0.baseAddress) }
            }
        }
        return w.withUnsafeBytes { wp in
            q.withUnsafeBufferPointer { qp in
                scales.withUnsafeBufferPointer { hone_dot_q(type, wp.baseAddress, qp.baseAddress, $0.baseAddress, n) }
            }
        }
    }

    @Test("weights dequantize to the same floats at every level", arguments: quantizedTypes)
    func dequantizationMatchesReference(typeID: Int) {
        let type = Int32(typeID)
        let n = 4 * Self.width(type)
        let w = Self.quantized(type, Self.values(n, seed: 13, scale: 0.1)) + Self.randomBlocks(type, n, seed: 14)
        let count = 2 * n
        var reference = [Float](repeating: 0, count: count)
        _ = w.withUnsafeBytes { hone_dequantize_reference(type, $0.baseAddress, &reference, count) }
        for level in Self.fastLevels {
            var fast = [Float](repeating: 0, count: count)
            _ = level.use { w.withUnsafeBytes { hone_dequantize(type, $0.baseAddress, &fast, count) } }
            #expect(fast.map(\.bitPattern) == reference.map(\.bitPattern), "\(level) type \(type)")
        }
    }

    @Test("activations quantize to the same int16 values, scales and sums at every level")
    func activationQuantizationMatchesReference() {
        // Ordinary values, and a block of zeros (scale 0).
        var x = Self.values(1536, seed: 11, scale: 3)
        for i in 64..<96 { x[i] = 0 }
        func quantize() -> ([Int16], [Float], [Int32]) {
            var q = [Int16](repeating: 0, count: x.count)
            var scales = [hone_act_scale](repeating: hone_act_scale(), count: x.count / 32)
            hone_quantize_activations(x, x.count, &q, &scales)
            return (q, scales.map(\.d), scales.map(\.sum))
        }
        let reference = KernelLevel.reference.use { quantize() }
        for level in Self.fastLevels {
            let fast = level.use { quantize() }
            #expect(fast.0 == reference.0 && fast.1 == reference.1 && fast.2 == reference.2, "\(level)")
        }
    }

    /// Every quantized type the dot kernels read.
    static let quantizedTypes = [HONE_TYPE_Q8_0, HONE_TYPE_Q4_0, HONE_TYPE_Q4_1, HONE_TYPE_Q5_0, HONE_TYPE_Q5_1,
                                 HONE_TYPE_Q4_K, HONE_TYPE_Q5_K, HONE_TYPE_Q6_K].map { Int($0) }

    /// A row length the type allows: SmolLM2's 576 for 32-value blocks, its 1536 for K-quants.
    static func width(_ type: Int32) -> Int { GGMLType(rawValue: UInt32(type))!.blockSize > 32 ? 1536 : 576 }

    /// Blocks of random bits with small finite fp16 scales: every bit pattern of the integer
    /// fields (K-quant scales up to 63, negative Q6_K scales) that a quantizer may not write.
    static func randomBlocks(_ type: Int32, _ n: Int, seed: UInt64) -> [UInt8] {
        let t = GGMLType(rawValue: UInt32(type))!
        var state = seed
        var bytes = (0..<t.bytes(for: n)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        // Where the fp16 fields sit in each block: d first (and m or dmin after it); Q6_K's last.
        let halves = t == .q6_K ? [208] : t == .q5_0 || t == .q8_0 || t == .q4_0 ? [0] : [0, 2]
        let smallScales = values(n / t.blockSize * halves.count, seed: seed ^ 0x5eed, scale: 0.02)
        var next = 0
        for block in 0..<(n / t.blockSize) {
            for at in halves {
                let h = hone_f32_to_f16(abs(smallScales[next]) + 0.0005)
                next += 1
                bytes[block * t.blockBytes + at] = UInt8(h & 0xff)
                bytes[block * t.blockBytes + at + 1] = UInt8(h >> 8)
            }
        }
        return bytes
    }

    @Test(arguments: quantizedTypes)
    func quantizedDotMatchesReferenceAndFloat(typeID: Int) {
        let type = Int32(typeID)
        let n = Self.width(type)
        for seed in UInt64(1)...20 {
            let w = seed % 2 == 0 ? Self.quantized(type, Self.values(n, seed: seed, scale: 0.1)) : Self.randomBlocks(type, n, seed: seed)
            let x = Self.values(n, seed: seed + 1000, scale: 3)
            let reference = KernelLevel.reference.use { Self.dotQ(type, w, x) }
            for level in Self.fastLevels {
                let fast = level.use { Self.dotQ(type, w, x) }
                #expect(abs(fast - reference) <= 1e-4 * max(1, abs(reference)), "\(level) type \(type) seed \(seed): fast \(fast) reference \(reference)")
            }
            let exact = zip(Self.dequantized(type, w, n), x).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            // int16 activations cost at most ~1e-4 of the magnitude here.
            let magnitude = zip(Self.dequantized(type, w, n), x).reduce(Float(0)) { $0 + abs($1.0 * $1.1) }
            #expect(abs(reference - exact) <= 1e-4 * magnitude, "type \(type) seed \(seed): int16 \(reference) float \(exact)")
        }
    }

    @Test(arguments: quantizedTypes)
    func multiRowKernelMatchesSingleRows(typeID: Int) {
        let type = Int32(typeID)
        let n = 1536, rows = 11
        let rowBytes = Self.bytes(type, n)
        let w = Self.quantized(type, Self.values(n * rows, seed: 5, scale: 0.05))
        let x = Self.values(n, seed: 6, scale: 2)
        var q = [Int16](repeating: 0, count: n)
        var scales = [hone_act_scale](repeating: hone_act_scale(), count: n / 32)
        hone_quantize_activations(x, n, &q, &scales)
        let single = KernelLevel.reference.use {
            (0..<rows).map { r in w.withUnsafeBytes { hone_dot_q(type, $0.baseAddress! + r * rowBytes, q, scales, n) } }
        }
        for level in Self.fastLevels {
            var many = [Float](repeating: 0, count: rows)
            level.use { w.withUnsafeBytes { hone_dot_q_rows(type, $0.baseAddress, rowBytes, Int32(rows), q, scales, n, &many) } }
            for r in 0..<rows { #expect(abs(many[r] - single[r]) <= 1e-4 * max(1, abs(single[r])), "\(level) row \(r)") }
        }
    }

    @Test("every kernel of a level gives a row the same bits: one row at a time, four rows, a long span either way, or beside another vector",
          arguments: quantizedTypes)
    func kernelsOfALevelAgreeBitwise(typeID: Int) {
        let type = Int32(typeID)
        let n = Self.width(type)
        let rowBytes = Self.bytes(type, n)
        // Enough rows for one vector to take the streamed one-row path (≥ 256 KB).
        let rows = (256 << 10) / rowBytes + 5
        let w = Self.quantized(type, Self.values(n * rows, seed: 9, scale: 0.05))
        var q = [Int16](repeating: 0, count: 2 * n)
        var scales = [hone_act_scale](repeating: hone_act_scale(), count: 2 * n / 32)
        for j in 0..<2 {
            let x = Self.values(n, seed: UInt64(200 + j), scale: 2)
            q.withUnsafeMutableBufferPointer { qp in
                scales.withUnsafeMutableBufferPointer { sp in hone_quantize_activations(x, n, qp.baseAddress! + j * n, sp.baseAddress! + j * n / 32) }
            }
        }
        for level in Self.fastLevels {
            level.use {
                w.withUnsafeBytes { wp in
                    let one = (0..<rows).map { hone_dot_q(type, wp.baseAddress! + $0 * rowBytes, q, scales, n) }
                    // The long span both ways (each thread picks the faster way by timing).
                    for rowByRow: Int32 in [1, 0] {
                        hone_long_spans_fix(rowByRow)
                        var streamed = [Float](repeating: 0, count: rows)
                        hone_dot_q_rows(type, wp.baseAddress, rowBytes, Int32(rows), q, scales, n, &streamed)
                        #expect(streamed == one, "\(level) type \(type): long span, row by row \(rowByRow)")
                    }
                    var paired = [Float](repeating: 0, count: 2 * rows)
                    hone_dot_q_rows_multi(type, wp.baseAddress, rowBytes, Int32(rows), q, n, scales, n / 32, 2, n, &paired, rows)
                    #expect(Array(paired[0..<rows]) == one, "\(level) type \(type): four-row kernel")
                }
            }
        }
    }

    @Test("several activation vectors at once give, bit for bit, each vector's result alone (batch invariance)",
          arguments: quantizedTypes)
    func multiVectorKernelIsBatchInvariant(typeID: Int) {
        let type = Int32(typeID)
        let n = Self.width(type), rows = 13
        let rowBytes = Self.bytes(type, n)
        let w = Self.quantized(type, Self.values(n * rows, seed: 7, scale: 0.05))
        for level in KernelLevel.allCases where level <= .active {
            level.use {
                for m in [1, 2, 3, 4, 5, 7, 8, 9, 16, 19] {
                    var q = [Int16](repeating: 0, count: m * n)
                    var scales = [hone_act_scale](repeating: hone_act_scale(), count: m * n / 32)
                    for j in 0..<m {
                        let x = Self.values(n, seed: UInt64(100 + j), scale: 2)
                        q.withUnsafeMutableBufferPointer { qp in
                            scales.withUnsafeMutableBufferPointer { sp in
                                hone_quantize_activations(x, n, qp.baseAddress! + j * n, sp.baseAddress! + j * n / 32)
                            }
                        }
                    }
                    var together = [Float](repeating: 0, count: m * rows)
                    w.withUnsafeBytes { hone_dot_q_rows_multi(type, $0.baseAddress, rowBytes, Int32(rows), q, n, scales, n / 32, Int32(m), n, &together, rows) }
                    for j in 0..<m {
                        var alone = [Float](repeating: 0, count: rows)
                        q.withUnsafeBufferPointer { qp in
                            scales.withUnsafeBufferPointer { sp in
                                w.withUnsafeBytes { hone_dot_q_rows(type, $0.baseAddress, rowBytes, Int32(rows), qp.baseAddress! + j * n, sp.baseAddress! + j * n / 32, n, &alone) }
                            }
                        }
                        #expect(Array(together[(j * rows)..<((j + 1) * rows)]) == alone, "\(level) type \(type), \(m) vectors, vector \(j)")
                    }
                }
            }
        }
    }

    @Test func floatDotMatchesReference() {
        for n in [1, 7, 31, 64, 577, 1536] {
            let a = Self.values(n, seed: UInt64(n)), b = Self.values(n, seed: UInt64(n) + 7)
            let reference = KernelLevel.reference.use { hone_dot_f32(a, b, n) }
            for level in Self.fastLevels {
                #expect(abs(level.use { hone_dot_f32(a, b, n) } - reference) <= 1e-5 * Float(n), "\(level) n \(n)")
            }
        }
    }

    @Test("the test-model quantizers keep every value within a step of its block's scale", arguments: quantizedTypes)
    func quantizerRoundTrips(typeID: Int) {
        let type = Int32(typeID)
        let n = 1536
        let x = Self.values(n, seed: 11, scale: 0.3)
        let back = Self.dequantized(type, Self.quantized(type, x), n)
        // Worst case over types: Q4_0 steps max|x|/8 of a 32-block, K-quants' 6-bit scales
        // add a little; 0.3/8 = 0.0375 bounds half a step of each.
        let worst = zip(x, back).map { abs($0 - $1) }.max()!
        #expect(worst <= 0.3 / 8, "type \(type): worst error \(worst)")
        let rms = (zip(x, back).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Float(n)).squareRoot()
        #expect(rms <= 0.3 / 16, "type \(type): rms error \(rms)")
    }

    @Test func halfConversionRoundTrips() {
        for bits in stride(from: 0, to: 0x7c00, by: 7) {
            let h = UInt16(bits)
            #expect(hone_f32_to_f16(hone_f16_to_f32(h)) == h)
        }
        #expect(hone_f16_to_f32(0x3c00) == 1)
        #expect(hone_f16_to_f32(0xc000) == -2)
        #expect(hone_f16_to_f32(0x7c00) == .infinity)
        #expect(hone_f16_to_f32(0x0001) == Float(5.960464477539063e-08))
    }

    @Test("the exponential is within 2 ulp of libm's and gives the same bits at every level (SwiGLU and its backward, softmax, log-sum-exp)")
    func exponentialAndItsUsersMatchAcrossLevels() {
        // libm's expf over the clamped range, and the clamps themselves.
        for x in stride(from: Float(-87), through: 88, by: 0.0173) {
            let (ours, libm) = (hone_exp(x), expf(x))
            #expect(abs(ours - libm) <= 2 * libm.ulp, "x \(x): \(ours) against \(libm)")
        }
        #expect(hone_exp(-1000) == hone_exp(-87) && hone_exp(-87) > 0)
        #expect(hone_exp(1000) == hone_exp(88) && hone_exp(88).isFinite)
        #expect(hone_exp(.nan).isNaN)
        // 1 000 values (a tail past every vector width) through each level's vector code.
        let gate = Self.values(1000, seed: 21, scale: 12), up = Self.values(1000, seed: 22, scale: 3)
        func swiglu() -> [Float] {
            var out = [Float](repeating: 0, count: gate.count)
            hone_swiglu(gate, up, gate.count, &out)
            return out
        }
        let dout = Self.values(1000, seed: 24)
        func backward() -> [Float] {
            var dgate = [Float](repeating: 0, count: gate.count), dup = dgate
            hone_swiglu_backward(dout, gate, up, gate.count, &dgate, &dup)
            return dgate + dup
        }
        let softmaxInput = Self.values(1000, seed: 25, scale: 30)
        func softmax() -> [Float] {
            var x = softmaxInput
            hone_softmax(&x, x.count)
            return x
        }
        let reference = KernelLevel.reference.use { swiglu() }
        let (referenceBackward, referenceSoftmax) = KernelLevel.reference.use { (backward(), softmax()) }
        #expect(abs(referenceSoftmax.reduce(0, +) - 1) < 1e-5)
        for (g, (u, r)) in zip(gate, zip(up, reference)) {
            let exact = Double(g) / (1 + exp(-Double(g))) * Double(u)
            #expect(abs(Double(r) - exact) <= 1e-6 * max(1, abs(exact)), "silu(\(g)) · \(u)")
        }
        let logits = Self.values(49152, seed: 23, scale: 20)
        let logZ = KernelLevel.reference.use { hone_log_sum_exp(logits, logits.count) }
        let top = Double(logits.max()!)
        let exact = top + log(logits.reduce(0.0) { $0 + exp(Double($1) - top) })
        #expect(abs(Double(logZ) - exact) <= 1e-5 * abs(exact))
        for level in Self.fastLevels {
            #expect(level.use { swiglu() } == reference, "\(level)")
            #expect(level.use { backward() } == referenceBackward, "\(level)")
            #expect(level.use { softmax() } == referenceSoftmax, "\(level)")
            #expect(level.use { hone_log_sum_exp(logits, logits.count) } == logZ, "\(level)")
        }
    }

    @Test("decode attention over a cache agrees with a float64 softmax at every level", arguments: [64, 40])
    func cachedAttentionMatchesReference(headDim d: Int) {
        // Three query heads share a KV head, as in SmolLM2 (9 heads, 3 KV heads); cache rows
        // hold all three KV heads (stride 3·D) and the one read is the second.
        let group = 3, stride = 3 * d, scale = 1 / Float(d).squareRoot()
        for length in [1, 2, 17, 80] {
            let q = Self.values(group * d, seed: UInt64(length), scale: 2)
            let keys = Self.values(length * stride, seed: UInt64(length) + 100, scale: 2)
            let values = Self.values(length * stride, seed: UInt64(length) + 200)
            var expected = [Double](repeating: 0, count: group * d)
            for g in 0..<group {
                let s = (0..<length).map { t in (0..<d).reduce(0.0) { $0 + Double(q[g * d + $1]) * Double(keys[t * stride + d + $1]) } * Double(scale) }
                let top = s.max()!, w = s.map { exp($0 - top) }, total = w.reduce(0, +)
                for t in 0..<length { for e in 0..<d { expected[g * d + e] += w[t] / total * Double(values[t * stride + d + e]) } }
            }
            for level in [KernelLevel.reference] + Self.fastLevels {
                let out = level.use {
                    var scores = [Float](repeating: 0, count: group * length), out = [Float](repeating: 0, count: group * d)
                    keys.withUnsafeBufferPointer { k in
                        values.withUnsafeBufferPointer { v in
                            hone_attend_cached(q, Int32(group), Int32(d), k.baseAddress! + d, v.baseAddress! + d, stride, Int32(length),
                                               scale, &scores, &out)
                        }
                    }
                    return out
                }
                let worst = zip(out, expected).map { abs(Double($0) - $1) }.max()!
                #expect(worst <= 1e-5, "\(level), length \(length): worst error \(worst)")
            }
        }
    }

    @Test("LoRA rows: within float rounding of a float64 product, and the same bits at every level, for any row count, with or without a transposed B",
          arguments: [16, 8, 24])
    func loraRowsMatchAcrossLevelsAndBatches(rank: Int) {
        // Widths with tails past every vector width; 9 rows: two blocks of four and one alone.
        let rows = 9, inWidth = 200, outWidth = 75, scale: Float = 1.5
        let x = Self.values(rows * inWidth, seed: 31), a = Self.values(rank * inWidth, seed: 32, scale: 0.1)
        let b = Self.values(outWidth * rank, seed: 33, scale: 0.1), y0 = Self.values(rows * outWidth, seed: 34)
        let ranks = (rank + 15) / 16 * 16
        var bt = [Float](repeating: 0, count: ranks * outWidth)
        for o in 0..<outWidth { for r in 0..<rank { bt[r * outWidth + o] = b[o * rank + r] } }
        /// All rows in one call, or each row alone; with Bᵀ given or not.
        func run(together: Bool, transposed: Bool) -> [Float] {
            var y = y0
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    bt.withUnsafeBufferPointer { tp in
                        let given = transposed ? tp.baseAddress : nil
                        if together {
                            hone_lora_add(xp.baseAddress!, rows, inWidth, a, Int32(rank), b, given, outWidth, scale, yp.baseAddress!)
                        } else {
                            for i in 0..<rows {
                                hone_lora_add(xp.baseAddress! + i * inWidth, 1, inWidth, a, Int32(rank), b, given, outWidth, scale,
                                              yp.baseAddress! + i * outWidth)
                            }
                        }
                    }
                }
            }
            return y
        }
        let reference = KernelLevel.reference.use { run(together: false, transposed: false) }
        for i in 0..<rows {
            let u = (0..<rank).map { r in (0..<inWidth).reduce(0.0) { $0 + Double(x[i * inWidth + $1]) * Double(a[r * inWidth + $1]) } }
            for o in 0..<outWidth {
                let exact = Double(y0[i * outWidth + o]) + Double(scale) * (0..<rank).reduce(0.0) { $0 + u[$1] * Double(b[o * rank + $1]) }
                #expect(abs(Double(reference[i * outWidth + o]) - exact) <= 1e-5 * max(1, abs(exact)), "row \(i), output \(o)")
            }
        }
        #expect(reference != y0)
        for level in KernelLevel.allCases where level <= .active {
            for together in [false, true] {
                for transposed in [false, true] {
                    #expect(level.use { run(together: together, transposed: transposed) } == reference,
                            "\(level), together \(together), transposed \(transposed)")
                }
            }
        }
    }
}
