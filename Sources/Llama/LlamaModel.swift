import CKernels
import Foundation
import GGUF
import Tensor

/// One transformer block's weights.
struct LlamaLayer: Sendable {
    let attnNorm: [Float]        // (C)
    let q: QuantizedMatrix       // (H·D, C)
    let k: QuantizedMatrix       // (KV·D, C)
    let v: QuantizedMatrix       // (KV·D, C)
    let o: QuantizedMatrix       // (C, H·D)
    let ffnNorm: [Float]         // (C)
    let gate: QuantizedMatrix    // (F, C)
    let up: QuantizedMatrix      // (F, C)
    let down: QuantizedMatrix    // (C, F)
    /// Qwen2's projection biases (H·D, KV·D, KV·D); nil for Llama.
    let qBias: [Float]?
    let kBias: [Float]?
    let vBias: [Float]?
}

/// A Llama-architecture model loaded from GGUF: weights stay quantized in the mapping.
public final class LlamaModel: Sendable {
    public let config: LlamaConfig
    public let file: GGUFFile
    let embedding: QuantizedMatrix   // (V, C)
    let layers: [LlamaLayer]
    let outputNorm: [Float]          // (C)
    let output: QuantizedMatrix      // (V, C): token_embd when tied
    let rope: RoPE

    public init(file: GGUFFile) throws {
        let config = try LlamaConfig(gguf: file)
        self.config = config
        self.file = file
        func info(_ t: LlamaTensor, _ shape: [Int]) throws -> GGUFTensorInfo {
            guard let i = file.tensors[t.name] else { throw GGUFError("tensor \(t.name) is missing") }
            guard i.dims == shape else { throw GGUFError("tensor \(t.name) has shape \(i.dims), expected \(shape)") }
            return i
        }
        func matrix(_ t: LlamaTensor, out: Int, in inDim: Int) throws -> QuantizedMatrix {
            QuantizedMatrix(file: file, info: try info(t, [inDim, out]))
        }
        func vector(_ t: LlamaTensor, _ n: Int) throws -> [Float] {
            _ = try info(t, [n])
            return try file.floats(t.name)
        }
        /// A vector the architecture requires (`required`) or the file may have.
        func optionalVector(_ t: LlamaTensor, _ n: Int, required: Bool) throws -> [Float]? {
            required || file.tensors[t.name] != nil ? try vector(t, n) : nil
        }
        let biased = config.architecture == .qwen2
        let c = config.width, f = config.ffnWidth, d = config.headDim
        embedding = try matrix(.tokenEmbedding, out: config.vocabSize, in: c)
        layers = try (0..<config.layers).map { i in
            LlamaLayer(
                attnNorm: try vector(.attnNorm(i), c),
                q: try matrix(.attnQ(i), out: config.heads * d, in: c),
                k: try matrix(.attnK(i), out: config.kvHeads * d, in: c),
                v: try matrix(.attnV(i), out: config.kvHeads * d, in: c),
                o: try matrix(.attnOutput(i), out: c, in: config.heads * d),
                ffnNorm: try vector(.ffnNorm(i), c),
                gate: try matrix(.ffnGate(i), out: f, in: c),
                up: try matrix(.ffnUp(i), out: f, in: c),
                down: try matrix(.ffnDown(i), out: c, in: f),
                qBias: try optionalVector(.attnQBias(i), config.heads * d, required: biased),
                kBias: try optionalVector(.attnKBias(i), config.kvHeads * d, required: biased),
                vBias: try optionalVector(.attnVBias(i), config.kvHeads * d, required: biased))
        }
        outputNorm = try vector(.outputNorm, c)
        output = file.tensors[LlamaTensor.output.name] != nil
            ? try matrix(.output, out: config.vocabSize, in: c) : embedding
        rope = RoPE(headDim: d, base: config.ropeBase, pairs: config.architecture == .qwen2 ? .halves : .adjacent,
                    frequencyFactors: try optionalVector(.ropeFrequencies, d / 2, required: false))
    }

    /// Loads a GGUF file.
    public convenience init(path: String) throws {
        try self.init(file: try GGUFFile(path: path))
    }

    /// A KV cache for one sequence of up to `capacity` tokens (default: the context length).
    public func makeCache(capacity: Int? = nil) -> KVCache {
        KVCache(config: config, capacity: min(capacity ?? config.contextLength, config.contextLength))
    }
}

/// Keys and values of one sequence's past tokens, per layer.
public final class KVCache: @unchecked Sendable {
    // Not shared: a cache belongs to one sequence and one forward call at a time.
    public let capacity: Int
    /// Tokens held.
    public private(set) var count = 0
    let kvWidth: Int
    var keys: [[Float]]    // L × (capacity, KV·D)
    var values: [[Float]]  // L × (capacity, KV·D)

    init(config: LlamaConfig, capacity: Int) {
        self.capacity = capacity
        kvWidth = config.kvHeads * config.headDim
        keys = Array(repeating: [Float](repeating: 0, count: capacity * kvWidth), count: config.layers)
        values = keys
    }

    /// Forgets tokens from `position` on (e.g. to reuse a shared prompt prefix).
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= count)
        count = position
    }

    func advance(by n: Int) { count += n }

    /// Stores one token's keys and values (`kvWidth` floats each) of `layer` at `position`:
    /// two copies, where element-wise stores into the nested arrays paid an exclusivity
    /// check and a uniqueness check each (~2% of a 16-sequence decode step).
    func store(layer: Int, position: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>) {
        let start = position * kvWidth
        keys[layer].withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: start).update(from: k, count: kvWidth) }
        values[layer].withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: start).update(from: v, count: kvWidth) }
    }

    /// A copy of the keys and values of the first `length` tokens.
    public func prefix(_ length: Int) -> KVPrefix {
        precondition(length >= 0 && length <= count)
        let n = length * kvWidth
        return KVPrefix(length: length, keys: keys.map { Array($0[0..<n]) }, values: values.map { Array($0[0..<n]) })
    }

    /// Starts this empty cache from `prefix`: as if its tokens had been run through it.
    public func load(_ prefix: KVPrefix) {
        precondition(count == 0 && prefix.length <= capacity && prefix.keys.count == keys.count)
        for layer in keys.indices {
            keys[layer].replaceSubrange(0..<prefix.keys[layer].count, with: prefix.keys[layer])
            values[layer].replaceSubrange(0..<prefix.values[layer].count, with: prefix.values[layer])
        }
        count = prefix.length
    }
}

/// The keys and values of a sequence's first tokens, copied out of its cache.
public struct KVPrefix: Sendable {
    /// Tokens covered.
    public let length: Int
    let keys: [[Float]]
    let values: [[Float]]
    /// Memory held.
    public var bytes: Int { 2 * keys.reduce(0) { $0 + $1.count } * MemoryLayout<Float>.size }
}

/// Why a forward pass could not run.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
