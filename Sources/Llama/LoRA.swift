import CKernels
import Synchronization
import Tensor

/// A linear layer of a transformer block that a LoRA adapter may target. Raw values are
/// PEFT's module names, the names of `adapter_config.json`'s `target_modules`.
public enum LoRATarget: String, CaseIterable, Sendable, Codable, Comparable {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj"
    case gate = "gate_proj", up = "up_proj", down = "down_proj"

    /// PEFT's module path inside a block: `self_attn.q_proj`, `mlp.gate_proj`, ….
    public var modulePath: String {
        switch self {
        case .q, .k, .v, .o: return "self_attn.\(rawValue)"
        case .gate, .up, .down: return "mlp.\(rawValue)"
        }
    }

    /// The GGUF tensor of layer `i` this target adapts.
    public func tensor(layer i: Int) -> LlamaTensor {
        switch self {
        case .q: return .attnQ(i)
        case .k: return .attnK(i)
        case .v: return .attnV(i)
        case .o: return .attnOutput(i)
        case .gate: return .ffnGate(i)
        case .up: return .ffnUp(i)
        case .down: return .ffnDown(i)
        }
    }

    /// (out, in) of this target's weight in a model of `config`.
    public func shape(_ config: LlamaConfig) -> (out: Int, in: Int) {
        let c = config.width, f = config.ffnWidth, qd = config.heads * config.headDim, kvd = config.kvHeads * config.headDim
        switch self {
        case .q: return (qd, c)
        case .k, .v: return (kvd, c)
        case .o: return (c, qd)
        case .gate, .up: return (f, c)
        case .down: return (c, f)
        }
    }

    public static func < (a: LoRATarget, b: LoRATarget) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// A target by its PEFT module name (`q_proj`) or its short name (`q`).
    public static func named(_ name: String) -> LoRATarget? {
        LoRATarget(rawValue: name) ?? LoRATarget(rawValue: name + "_proj")
    }
}

/// Rank, scale and targets of a LoRA adapter. Defaults: rank 16, alpha 32, all seven linear
/// layers of every block (DESIGN.md).
public struct LoRAConfig: Sendable, Equatable, Codable {
    /// R, the inner dimension of B · A.
    public var rank: Int
    /// The update's numerator: ΔW = alpha / R · B · A.
    public var alpha: Float
    /// The adapted layers of every block, in `LoRATarget` order.
    public var targets: [LoRATarget]
    /// The update is scaled by alpha / R.
    public var scale: Float { alpha / Float(rank) }

    /// Settings; targets are kept sorted so equal settings compare equal.
    public init(rank: Int = 16, alpha: Float = 32, targets: [LoRATarget] = LoRATarget.allCases) {
        self.rank = rank
        self.alpha = alpha
        self.targets = targets.sorted()
    }
}

/// One (layer, target) pair of an adapter.
public struct LoRAKey: Hashable, Sendable, Comparable {
    public let layer: Int
    public let target: LoRATarget
    public init(layer: Int, target: LoRATarget) {
        self.layer = layer
        self.target = target
    }
    public static func < (a: LoRAKey, b: LoRAKey) -> Bool { (a.layer, a.target) < (b.layer, b.target) }
}

/// The factors of one adapted layer, ΔW = scale · B · A, in the row order of the GGUF
/// weight (for q and k that is llama.cpp's RoPE order, not Hugging Face's; file I/O permutes).
public struct LoRAWeights: Sendable, Equatable {
    public var a: [Float]   // (R, in)
    public var b: [Float]   // (out, R)
    public init(a: [Float], b: [Float]) {
        self.a = a
        self.b = b
    }
}

/// A LoRA adapter: a value, so training a copy never touches the adapter that serves.
/// The same shape also holds gradients and optimizer moments.
public struct LoRAAdapter: Sendable, Equatable {
    public let config: LoRAConfig
    /// L, the blocks of the model it was made for.
    public let layers: Int
    /// Factors of every adapted (layer, target).
    public var weights: [LoRAKey: LoRAWeights] { didSet { transposedB = nil } }

    /// Each factor's B transposed for the inference kernel (`LoRAFactors.bt`), made by
    /// `preparedForInference()` and dropped by any change to `weights`.
    private var transposedB: [LoRAKey: [Float]]? { didSet { inferenceID = transposedB == nil ? nil : Self.preparations.add(1, ordering: .relaxed).newValue } }

    /// Set while the adapter is prepared for inference; equal only for copies of one
    /// preparation (the same factors), so a forward pass runs their rows together.
    public private(set) var inferenceID: UInt64?

    /// Preparations made in this process: the source of `inferenceID`s.
    private static let preparations = Atomic<UInt64>(0)

    /// Equal configuration and factors (a prepared copy equals its original).
    public static func == (x: LoRAAdapter, y: LoRAAdapter) -> Bool {
        x.config == y.config && x.layers == y.layers && x.weights == y.weights
    }

    /// This adapter with every B transposed once for inference: a decode step's rows then
    /// read B's columns from here instead of the kernel transposing B for each call (for 16
    /// rows of one adapter that copy was most of the LoRA work). Costs B's size again
    /// (~10 MB at rank 16 on all seven targets of SmolLM2-135M).
    public func preparedForInference() -> LoRAAdapter {
        guard transposedB == nil else { return self }
        var copy = self
        let ranks = (config.rank + 15) / 16 * 16
        copy.transposedB = weights.mapValues { w in
            let out = w.b.count / config.rank
            guard out > 0 else { return [] }
            return [Float](unsafeUninitializedCapacity: ranks * out) { bt, count in
                hone_lora_transpose(w.b, Int32(config.rank), out, bt.baseAddress!)
                count = ranks * out
            }
        }
        return copy
    }

    /// Keys in a fixed order (layer, then target), for deterministic iteration.
    public var keys: [LoRAKey] { weights.keys.sorted() }

    /// Bytes its factors hold in memory (float32).
    public var byteCount: Int { weights.values.reduce(0) { $0 + ($1.a.count + $1.b.count) * MemoryLayout<Float>.size } }

    /// All factors zero (for gradients and moments).
    public static func zeros(config: LoRAConfig, model: LlamaConfig) -> LoRAAdapter {
        var weights: [LoRAKey: LoRAWeights] = [:]
        for layer in 0..<model.layers {
            for target in config.targets {
                let (out, inWidth) = target.shape(model)
                weights[LoRAKey(layer: layer, target: target)] = LoRAWeights(
                    a: [Float](repeating: 0, count: config.rank * inWidth),
                    b: [Float](repeating: 0, count: out * config.rank))
            }
        }
        return LoRAAdapter(config: config, layers: model.layers, weights: weights)
    }

    /// A fresh adapter as PEFT initialises one: A uniform in ±1/√in (Kaiming-uniform with
    /// a = √5), B zero, so the adapted model starts equal to the base.
    public static func initialized(config: LoRAConfig, model: LlamaConfig, seed: UInt64) -> LoRAAdapter {
        var adapter = zeros(config: config, model: model)
        var random = SeededRandom(seed: seed)
        for key in adapter.keys {
            let bound = 1 / Float(key.target.shape(model).in).squareRoot()
            for i in adapter.weights[key]!.a.indices {
                adapter.weights[key]!.a[i] = (random.unit() * 2 - 1) * bound
            }
        }
        return adapter
    }

    /// An adapter from its parts; `validate(for:)` checks them against a model.
    public init(config: LoRAConfig, layers: Int, weights: [LoRAKey: LoRAWeights]) {
        self.config = config
        self.layers = layers
        self.weights = weights
    }

    /// Runs `body` with pointers to the factors of `key`, or nil when it is not adapted.
    func withFactors<R>(_ key: LoRAKey, _ body: (LoRAFactors?) throws -> R) rethrows -> R {
        guard let w = weights[key] else { return try body(nil) }
        return try w.a.withUnsafeBufferPointer { a in
            try w.b.withUnsafeBufferPointer { b in
                guard let bt = transposedB?[key] else {
                    return try body(LoRAFactors(a: a.baseAddress!, b: b.baseAddress!, rank: config.rank, scale: config.scale))
                }
                return try bt.withUnsafeBufferPointer { bt in
                    try body(LoRAFactors(a: a.baseAddress!, b: b.baseAddress!, rank: config.rank, scale: config.scale, bt: bt.baseAddress!))
                }
            }
        }
    }

    /// Whether every value is finite.
    public var isFinite: Bool {
        weights.values.allSatisfy { w in w.a.allSatisfy(\.isFinite) && w.b.allSatisfy(\.isFinite) }
    }

    /// Checks the adapter fits `model`: layer count and every factor's shape.
    public func validate(for model: LlamaConfig) throws {
        guard layers == model.layers else {
            throw ModelError("the adapter has \(layers) layers; the model has \(model.layers)")
        }
        for (key, w) in weights {
            let (out, inWidth) = key.target.shape(model)
            guard key.layer < layers, w.a.count == config.rank * inWidth, w.b.count == out * config.rank else {
                throw ModelError("adapter tensor \(key.target.rawValue) of layer \(key.layer) has the wrong shape for rank \(config.rank) on this model (expected A \(config.rank)×\(inWidth), B \(out)×\(config.rank))")
            }
        }
    }
}
