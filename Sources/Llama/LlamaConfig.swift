import GGUF

/// Hyper-parameters of a Llama-architecture model, read from GGUF metadata.
/// Vocabulary (STYLE.md): C width, H heads, KV kv-heads, D head dim, F ffn width, V vocab, L layers.
public struct LlamaConfig: Sendable, Equatable {
    /// The GGUF architectures Hone runs: Llama (SmolLM, Llama 2/3, Mistral's GGUFs) and Qwen2,
    /// a Llama with q/k/v biases and RoPE over half-split pairs.
    public enum Architecture: String, Sendable, CaseIterable {
        case llama, qwen2
    }
    public var architecture: Architecture = .llama
    public var layers: Int        // L
    public var width: Int         // C
    public var heads: Int         // H
    public var kvHeads: Int       // KV
    public var ffnWidth: Int      // F
    public var vocabSize: Int     // V
    public var contextLength: Int
    public var ropeBase: Float
    public var rmsEpsilon: Float
    /// D = C / H.
    public var headDim: Int { width / heads }

    public init(layers: Int, width: Int, heads: Int, kvHeads: Int, ffnWidth: Int, vocabSize: Int,
                contextLength: Int, ropeBase: Float, rmsEpsilon: Float) {
        self.layers = layers
        self.width = width
        self.heads = heads
        self.kvHeads = kvHeads
        self.ffnWidth = ffnWidth
        self.vocabSize = vocabSize
        self.contextLength = contextLength
        self.ropeBase = ropeBase
        self.rmsEpsilon = rmsEpsilon
    }

    /// Reads `<architecture>.*` metadata; throws for other architectures or missing keys.
    public init(gguf: GGUFFile) throws {
        let name = gguf.metadata["general.architecture"]?.stringValue ?? "(none)"
        guard let arch = Architecture(rawValue: name) else {
            throw GGUFError("architecture \(name) is not supported (Hone runs \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        architecture = arch
        let prefix = arch.rawValue
        func int(_ key: String) throws -> Int {
            guard let v = gguf.metadata["\(prefix).\(key)"]?.intValue else { throw GGUFError("metadata \(prefix).\(key) is missing") }
            return v
        }
        layers = try int("block_count")
        width = try int("embedding_length")
        heads = try int("attention.head_count")
        kvHeads = gguf.metadata["\(prefix).attention.head_count_kv"]?.intValue ?? heads
        ffnWidth = try int("feed_forward_length")
        contextLength = try int("context_length")
        vocabSize = gguf.metadata["\(prefix).vocab_size"]?.intValue
            ?? gguf.metadata["tokenizer.ggml.tokens"]?.arrayValue?.count
            ?? gguf.tensors[LlamaTensor.tokenEmbedding.name]?.dims.last ?? 0
        ropeBase = Float(gguf.metadata["\(prefix).rope.freq_base"]?.doubleValue ?? 10_000)
        rmsEpsilon = Float(gguf.metadata["\(prefix).attention.layer_norm_rms_epsilon"]?.doubleValue ?? 1e-5)
        guard heads > 0, kvHeads > 0, heads % kvHeads == 0, width % heads == 0, headDim % 2 == 0 else {
            throw GGUFError("inconsistent attention shape: \(heads) heads, \(kvHeads) kv heads, width \(width)")
        }
        if let rope = gguf.metadata["\(prefix).rope.dimension_count"]?.intValue, rope != headDim {
            throw GGUFError("partial RoPE (\(rope) of \(headDim) dims) is not supported")
        }
    }
}

/// The GGUF tensor names of a Llama model: the one table of them.
public enum LlamaTensor: Sendable, Hashable {
    case tokenEmbedding, outputNorm, output, ropeFrequencies
    case attnNorm(Int), attnQ(Int), attnK(Int), attnV(Int), attnOutput(Int)
    case attnQBias(Int), attnKBias(Int), attnVBias(Int)
    case ffnNorm(Int), ffnGate(Int), ffnUp(Int), ffnDown(Int)

    public var name: String {
        switch self {
        case .tokenEmbedding: return "token_embd.weight"
        case .outputNorm: return "output_norm.weight"
        case .output: return "output.weight"
        case .ropeFrequencies: return "rope_freqs.weight"
        case .attnNorm(let i): return "blk.\(i).attn_norm.weight"
        case .attnQ(let i): return "blk.\(i).attn_q.weight"
        case .attnK(let i): return "blk.\(i).attn_k.weight"
        case .attnV(let i): return "blk.\(i).attn_v.weight"
        case .attnOutput(let i): return "blk.\(i).attn_output.weight"
        case .attnQBias(let i): return "blk.\(i).attn_q.bias"
        case .attnKBias(let i): return "blk.\(i).attn_k.bias"
        case .attnVBias(let i): return "blk.\(i).attn_v.bias"
        case .ffnNorm(let i): return "blk.\(i).ffn_norm.weight"
        case .ffnGate(let i): return "blk.\(i).ffn_gate.weight"
        case .ffnUp(let i): return "blk.\(i).ffn_up.weight"
        case .ffnDown(let i): return "blk.\(i).ffn_down.weight"
        }
    }
}
