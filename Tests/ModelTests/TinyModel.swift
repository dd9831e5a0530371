import Foundation
import GGUF
import Llama

/// Tiny random Llama models written as GGUF by the tests themselves (milliseconds).
enum TinyModel {
    struct Spec {
        var layers = 2, width = 64, heads = 4, kvHeads = 2, ffn = 96, vocab = 160, context = 64
        var type: GGMLType = .f32
        var tied = true
        var ropeBase: Float = 10_000
    }

    static func values(_ n: Int, seed: inout UInt64, scale: Float) -> [Float] {
        (0..<n).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// Writes the model to a temporary file and returns its path.
    static func write(_ spec: Spec = Spec(), seed: UInt64 = 1, mutate: (inout GGUFWriter) -> Void = { _ in }) throws -> String {
        var s = seed
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(UInt32(spec.layers)))
        w.set("llama.embedding_length", .uint32(UInt32(spec.width)))
        w.set("llama.attention.head_count", .uint32(UInt32(spec.heads)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(spec.kvHeads)))
        w.set("llama.feed_forward_length", .uint32(UInt32(spec.ffn)))
        w.set("llama.context_length", .uint32(UInt32(spec.context)))
        w.set("llama.vocab_size", .uint32(UInt32(spec.vocab)))
        w.set("llama.rope.freq_base", .float32(spec.ropeBase))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(1e-5))
        let c = spec.width, d = spec.width / spec.heads
        func matrix(_ t: LlamaTensor, out: Int, in inDim: Int) {
            w.addTensor(t.name, dims: [inDim, out], type: spec.type, values: values(out * inDim, seed: &s, scale: 1 / sqrtf(Float(inDim))))
        }
        func norm(_ t: LlamaTensor) {
            w.addTensor(t.name, dims: [c], type: .f32, values: values(c, seed: &s, scale: 0.2).map { 1 + $0 })
        }
        w.addTensor(LlamaTensor.tokenEmbedding.name, dims: [c, spec.vocab], type: spec.type, values: values(c * spec.vocab, seed: &s, scale: 1))
        for i in 0..<spec.layers {
            norm(.attnNorm(i))
            matrix(.attnQ(i), out: spec.heads * d, in: c)
            matrix(.attnK(i), out: spec.kvHeads * d, in: c)
            matrix(.attnV(i), out: spec.kvHeads * d, in: c)
            matrix(.attnOutput(i), out: c, in: spec.heads * d)
            norm(.ffnNorm(i))
            matrix(.ffnGate(i), out: spec.ffn, in: c)
            matrix(.ffnUp(i), out: spec.ffn, in: c)
            matrix(.ffnDown(i), out: c, in: spec.ffn)
        }
        norm(.outputNorm)
        if !spec.tied { matrix(.output, out: spec.vocab, in: c) }
        mutate(&w)
        let path = NSTemporaryDirectory() + "hone-tiny-\(UUID().uuidString).gguf"
        try w.write(to: path)
        return path
    }

    /// A straightforward float64 Llama forward over a whole sequence, written from the
    /// architecture's definition (not from Hone's code), for checking the engine.
    static func referenceLogits(file: GGUFFile, tokens: [Int]) throws -> [[Double]] {
        let config = try LlamaConfig(gguf: file)
        let c = config.width, h = config.heads, kv = config.kvHeads, d = config.headDim
        func m(_ t: LlamaTensor) throws -> [Double] { try file.floats(t.name).map(Double.init) }
        func matvec(_ w: [Double], _ x: [Double], out: Int) -> [Double] {
            (0..<out).map { r in (0..<x.count).reduce(0.0) { $0 + w[r * x.count + $1] * x[$1] } }
        }
        func rms(_ x: [Double], _ w: [Double]) -> [Double] {
            let r = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + Double(config.rmsEpsilon)).squareRoot()
            return x.indices.map { x[$0] * r * w[$0] }
        }
        func rope(_ x: inout [Double], heads: Int, pos: Int) {
            for head in 0..<heads {
                for i in 0..<(d / 2) {
                    let theta = Double(pos) / pow(Double(config.ropeBase), Double(2 * i) / Double(d))
                    let a = x[head * d + 2 * i], b = x[head * d + 2 * i + 1]
                    x[head * d + 2 * i] = a * cos(theta) - b * sin(theta)
                    x[head * d + 2 * i + 1] = a * sin(theta) + b * cos(theta)
                }
            }
        }
        let emb = try m(.tokenEmbedding)
        var xs = tokens.map { Array(emb[($0 * c)..<(($0 + 1) * c)]) }
        for l in 0..<config.layers {
            let (wq, wk, wv, wo) = (try m(.attnQ(l)), try m(.attnK(l)), try m(.attnV(l)), try m(.attnOutput(l)))
            let (wg, wu, wd) = (try m(.ffnGate(l)), try m(.ffnUp(l)), try m(.ffnDown(l)))
            let (n1, n2) = (try m(.attnNorm(l)), try m(.ffnNorm(l)))
            var qs: [[Double]] = [], ks: [[Double]] = [], vs: [[Double]] = []
            for (p, x) in xs.enumerated() {
                let hN = rms(x, n1)
                var q = matvec(wq, hN, out: h * d), k = matvec(wk, hN, out: kv * d)
                rope(&q, heads: h, pos: p)
                rope(&k, heads: kv, pos: p)
                qs.append(q); ks.append(k); vs.append(matvec(wv, hN, out: kv * d))
            }
            for p in xs.indices {
                var att = [Double](repeating: 0, count: h * d)
                for head in 0..<h {
                    let g = head / (h / kv)
                    var sc = (0...p).map { t in (0..<d).reduce(0.0) { $0 + qs[p][head * d + $1] * ks[t][g * d + $1] } / Double(d).squareRoot() }
                    let mx = sc.max()!
                    sc = sc.map { exp($0 - mx) }
                    let z = sc.reduce(0, +)
                    for t in 0...p { for e in 0..<d { att[head * d + e] += sc[t] / z * vs[t][g * d + e] } }
                }
                let o = matvec(wo, att, out: c)
                for e in 0..<c { xs[p][e] += o[e] }
                let hN = rms(xs[p], n2)
                let gg = matvec(wg, hN, out: config.ffnWidth), uu = matvec(wu, hN, out: config.ffnWidth)
                let a = gg.indices.map { gg[$0] / (1 + exp(-gg[$0])) * uu[$0] }
                let dn = matvec(wd, a, out: c)
                for e in 0..<c { xs[p][e] += dn[e] }
            }
        }
        let out = file.tensors[LlamaTensor.output.name] != nil ? try m(.output) : emb
        let fn = try m(.outputNorm)
        return xs.map { matvec(out, rms($0, fn), out: config.vocabSize) }
    }
}
