import CKernels
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
    ///
    /// Linear in V: no step sorts the vocabulary. Every draw at temperature > 0 used to sort
    /// all 49152 indices, ~3.5 ms a token, which at the API's default temperature (1) cut a
    /// 16-client step's throughput by more than half (`honebench serve`, the note of the
    /// commit). Plain temperature draws walk the tokens in index order; top-k and top-p sort
    /// only the most likely tokens they keep.
    public mutating func choose(logits: [Float], context: [Int], topLogprobs: Int = 0) -> TokenChoice {
        var l = logits
        if parameters.repetitionPenalty != 1 {
            for t in Set(context.suffix(parameters.repetitionWindow)) where t < l.count {
                l[t] = l[t] > 0 ? l[t] / parameters.repetitionPenalty : l[t] * parameters.repetitionPenalty
            }
        }
        let token = parameters.temperature <= 0 ? Self.argmax(l) : sample(l)
        let logZ = Self.logSumExp(logits)
        var top: [(Int, Float)] = []
        if topLogprobs > 0 {
            top = Self.topIndices(logits, topLogprobs).map { ($0, logits[$0] - logZ) }
        }
        return TokenChoice(token: token, logprob: logits[token] - logZ, top: top)
    }

    private mutating func sample(_ logits: [Float]) -> Int {
        // Every token's weight e^(l/t − max), once, through the C kernel's vector exponential
        // (two scalar expf passes over the vocabulary cost ~0.3 ms a token).
        let t = parameters.temperature
        var probabilities = logits.map { $0 / t }
        probabilities.withUnsafeMutableBufferPointer { hone_softmax($0.baseAddress!, $0.count) }
        let weight = { (i: Int) in probabilities[i] }
        let restricted = parameters.topK > 0 && parameters.topK < logits.count
        guard restricted || parameters.topP < 1 else {
            // Every token is a candidate: one pass for the total, one for the draw.
            var total: Double = 0
            for i in logits.indices { total += Double(weight(i)) }
            let target = Double(random.unit()) * total
            var acc: Double = 0
            for i in logits.indices {
                acc += Double(weight(i))
                if target < acc { return i }
            }
            return Self.argmax(logits)
        }
        // The candidates most likely first: the top k, or as many of the most likely as the
        // nucleus needs (its mass is known once every weight is summed).
        var candidates: [Int]
        if restricted {
            candidates = Self.topIndices(logits, parameters.topK)
        } else {
            var total: Double = 0
            for i in logits.indices { total += Double(weight(i)) }
            var count = 64
            while true {
                candidates = Self.topIndices(logits, count)
                var mass: Double = 0
                if let last = candidates.firstIndex(where: { mass += Double(weight($0)); return mass >= Double(parameters.topP) * total }) {
                    candidates.removeSubrange((last + 1)...)
                    break
                }
                if count >= logits.count { break }
                count *= 8
            }
        }
        var probs = candidates.map(weight)
        if restricted && parameters.topP < 1 {
            let total = probs.reduce(0, +)
            var cumulative: Float = 0
            if let last = probs.firstIndex(where: { cumulative += $0 / total; return cumulative >= parameters.topP }) {
                probs.removeSubrange((last + 1)...)
                candidates.removeSubrange((last + 1)...)
            }
        }
        let total = probs.reduce(0, +)
        let r = random.unit() * total
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

    /// The indices of the k largest values, largest first (the lower index first on ties),
    /// in one pass with a heap of k: O(V log k), not a sort of all V.
    static func topIndices(_ x: [Float], _ k: Int) -> [Int] {
        let k = min(k, x.count)
        guard k > 0 else { return [] }
        // Whether i ranks below j.
        func below(_ i: Int, _ j: Int) -> Bool { x[i] < x[j] || (x[i] == x[j] && i > j) }
        // A heap whose root is the lowest-ranked index kept.
        var heap: [Int] = []
        heap.reserveCapacity(k)
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let a = 2 * i + 1, b = a + 1
                var lowest = i
                if a < heap.count && below(heap[a], heap[lowest]) { lowest = a }
                if b < heap.count && below(heap[b], heap[lowest]) { lowest = b }
                if lowest == i { return }
                heap.swapAt(i, lowest)
                i = lowest
            }
        }
        for i in x.indices {
            if heap.count < k {
                heap.append(i)
                var c = heap.count - 1
                while c > 0 && below(heap[c], heap[(c - 1) / 2]) {
                    heap.swapAt(c, (c - 1) / 2)
                    c = (c - 1) / 2
                }
            } else if below(heap[0], i) {
                heap[0] = i
                siftDown(0)
            }
        }
        return heap.sorted { below($1, $0) }
    }

    /// ln Σ e^x: the C kernel's vector exponentials (49152 of them a token), summed in double.
    static func logSumExp(_ x: [Float]) -> Float { hone_log_sum_exp(x, x.count) }
}
