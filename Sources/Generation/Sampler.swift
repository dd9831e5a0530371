import Foundation
import Tensor

/// How the next token is chosen.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (0: all).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    public var topP: Float = 1
    /// > 1 discourages tokens already in the context (llama.cpp's rule).
    public var repetitionPenalty: Float = 1
    /// How many recent tokens the penalty looks at.
    public var repetitionWindow: Int = 64
    /// Seed for reproducible sampling; nil draws one.
    public var seed: UInt64?

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
    }
}

/// A chosen token with its log-probability and the most likely alternatives.
public struct TokenChoice: Sendable {
    public let token: Int
    /// ln p(token) under the model's distribution (before temperature and filters).
    public let logprob: Float
    /// The `topLogprobs` most likely tokens and their ln p, most likely first.
    public let top: [(token: Int, logprob: Float)]
}

/// Picks tokens from logits according to `SamplingParameters`.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var random: SeededRandom

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        random = SeededRandom(seed: parameters.seed ?? UInt64.random(in: 0...UInt64.max))
    }

    /// Chooses the next token given the logits (V) and the tokens so far.
    public mutating func choose(logits: [Float], context: [Int], topLogprobs: Int = 0) -> TokenChoice {
        var l = logits
        if parameters.repetitionPenalty != 1 {
            for t in Set(context.suffix(parameters.repetitionWindow)) where t < l.count {
                l[t] = l[t] > 0 ? l[t] / parameters.repetitionPenalty : l[t] * parameters.repetitionPenalty
            }
        }
        let token: Int
        if parameters.temperature <= 0 {
            token = Self.argmax(l)
        } else {
            token = sample(l)
        }
        let logZ = Self.logSumExp(logits)
        var top: [(Int, Float)] = []
        if topLogprobs > 0 {
            top = Self.topIndices(logits, topLogprobs).map { ($0, logits[$0] - logZ) }
        }
        return TokenChoice(token: token, logprob: logits[token] - logZ, top: top)
    }

    private mutating func sample(_ logits: [Float]) -> Int {
        var candidates = Array(logits.indices)
        if parameters.topK > 0 && parameters.topK < candidates.count {
            candidates = Self.topIndices(logits, parameters.topK)
        } else {
            candidates.sort { logits[$0] > logits[$1] }
        }
        let t = parameters.temperature
        let maxLogit = logits[candidates[0]]
        var probs = candidates.map { expf((logits[$0] - maxLogit) / t) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        if parameters.topP < 1 {
            var cumulative: Float = 0
            var keep = probs.count
            for (i, p) in probs.enumerated() {
                cumulative += p
                if cumulative >= parameters.topP { keep = i + 1; break }
            }
            probs = Array(probs.prefix(keep))
            candidates = Array(candidates.prefix(keep))
            let s = probs.reduce(0, +)
            for i in probs.indices { probs[i] /= s }
        }
        let r = random.unit()
        var acc: Float = 0
        for (i, p) in probs.enumerated() {
            acc += p
            if r < acc { return candidates[i] }
        }
        return candidates[candidates.count - 1]
    }

    /// Index of the largest value (the first on ties).
    public static func argmax(_ x: [Float]) -> Int {
        var best = 0
        for i in 1..<x.count where x[i] > x[best] { best = i }
        return best
    }

    static func topIndices(_ x: [Float], _ k: Int) -> [Int] {
        Array(x.indices.sorted { x[$0] > x[$1] }.prefix(k))
    }

    static func logSumExp(_ x: [Float]) -> Float {
        let m = x.max() ?? 0
        var s: Double = 0
        for v in x { s += Double(expf(v - m)) }
        return m + Float(log(s))
    }
}
