import Foundation
import Llama
import Tokenizer
import Tensor
import Training

/// General prompts whose targets are the base model's own answers: four in five are
/// replayed in updates (so the adapter keeps answering them as the base does), the fifth
/// only measures drift at the gate, so the gate judges text the update never trained on.
public struct AnchorSet: DistilledSet, Sendable {
    /// Conversations replayed in training.
    public let replay: [[ChatMessage]]
    /// Sequences the gate measures NLL and KL on (loss mask: the base's answer).
    public let gate: [TrainingSequence]
    /// `replay` as training sequences; after `distill(model:stored:)` their targets are the base
    /// model's whole next-token distributions.
    public private(set) var replaySequences: [TrainingSequence]

    /// Fixed prompts: everyday knowledge, instructions and small reasoning, the kind of
    /// general ability an adapter must not lose.
    public static let prompts = [
        "What is the capital of France?",
        "Give me three tips for staying healthy.",
        "What does a thermometer measure?",
        "Translate 'good morning' into Spanish.",
        "Explain what photosynthesis is in one sentence.",
        "Write a short greeting for a birthday card.",
        "How many days are there in a week?",
        "What is the opposite of hot?",
        "Name a primary colour.",
        "Why do we need sleep?",
        "What is 12 plus 7?",
        "Describe the ocean in one sentence.",
        "What is the largest planet in our solar system?",
        "Suggest a name for a pet cat.",
        "What do bees make?",
        "How do you say thank you in French?",
        "Who wrote Romeo and Juliet?",
        "What is the boiling point of water in Celsius?",
        "List three fruits that are red.",
        "What is a noun?",
        "How does a rainbow form?",
        "Write one sentence about autumn.",
        "What is the square root of 81?",
        "Which ocean is the largest?",
        "What do plants need to grow?",
        "Give an example of a mammal that lives in the sea.",
        "What is the main ingredient of bread?",
        "Explain what a computer program is.",
        "How many continents are there?",
        "What is the freezing point of water in Fahrenheit?",
        "Recommend a hobby for a rainy day.",
        "What language is spoken in Brazil?",
        "What is the chemical symbol for gold?",
        "Describe a cat in three words.",
        "Why is the sky blue?",
        "What is the capital of Japan?",
        "How many legs does a spider have?",
        "Write a polite way to decline an invitation.",
        "What is the tallest animal?",
        "What does a doctor do?",
    ]

    /// The base model's (no adapter) greedy answers to `prompts`, in order.
    public static func answers(sampler: TextSampler, maxTokens: Int = 40) async throws -> [String] {
        try await sampler.complete(prompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: maxTokens) },
                                   adapter: nil)
    }

    /// The set for `answers` (one per prompt of `prompts`).
    public init(answers: [String], tokenizer: Tokenizer) {
        precondition(answers.count == Self.prompts.count, "one answer per anchor prompt")
        let conversations = zip(Self.prompts, answers).map {
            [ChatMessage(role: "user", content: $0), ChatMessage(role: "assistant", content: $1)]
        }
        // Every fifth prompt is held out for the gate; the rest are replayed.
        replay = conversations.indices.filter { $0 % 5 != 4 }.map { conversations[$0] }
        gate = conversations.indices.filter { $0 % 5 == 4 }.map { ChatExamples.sequence(conversations[$0], tokenizer: tokenizer) }
        replaySequences = replay.map { ChatExamples.sequence($0, tokenizer: tokenizer) }
    }

    /// The replayed answers: `distill` gives each answer position the base model's
    /// distribution as its target, so replay holds the adapter to the base's whole
    /// distribution, which is what the gate's KL measures, rather than only to its greedy tokens.
    public var distillationInputs: [TrainingSequence] { replaySequences }

    public mutating func setDistilled(_ sequences: [TrainingSequence]) {
        precondition(sequences.map(\.tokens) == replaySequences.map(\.tokens), "distilled sequences of another set")
        replaySequences = sequences
    }

    /// `sequences` with the base model's distribution (top `topK`, renormalized) as the
    /// target of every answer position.
    public static func distilled(_ sequences: [TrainingSequence], model: LlamaModel, topK: Int = 32) throws -> [TrainingSequence] {
        // Eight sequences per forward pass: one GEMM over all their rows instead of eight
        // small ones (the learner distils ~230 sequences whenever it starts).
        var out: [TrainingSequence] = []
        for start in stride(from: 0, to: sequences.count, by: 8) {
            let group = Array(sequences[start..<min(start + 8, sequences.count)])
            let logits = try model.forward(group.map { seq in
                let inputs = Array(seq.tokens.dropLast())
                return SequenceInput(tokens: inputs, cache: model.makeCache(capacity: inputs.count), allLogits: true)
            }, mode: .exact)
            for (original, sequenceLogits) in zip(group, logits) {
                var seq = original
                for t in 0..<(seq.tokens.count - 1) where seq.lossMask[t + 1] {
                    let p = Drift.logSoftmax(sequenceLogits[t]).map { exp($0) }
                    // Candidates above a small floor first: sorting all 49152 per position is slow.
                    let top = p.indices.filter { p[$0] > 1e-5 }.sorted { p[$0] > p[$1] }.prefix(topK)
                    let total = top.reduce(Float(0)) { $0 + p[$1] }
                    seq.softTargets[t + 1] = SoftTarget(tokens: Array(top), probabilities: top.map { p[$0] / total })
                }
                out.append(seq)
            }
        }
        return out
    }
}

/// How far an adapter moved the model's general behaviour, on the anchor answers.
public struct Drift: Sendable, Equatable {
    /// Mean NLL of the anchor answers, bits per token, for the base and with the adapter.
    public var baseNLL: Double
    public var adapterNLL: Double
    /// Mean KL(base ‖ adapter) over the answer positions, bits per token.
    public var kl: Double
    public var nllRise: Double { adapterNLL - baseNLL }

    /// Measures `adapter` against the base on `sequences`: one forward pass per sequence
    /// that runs it with the base and with the adapter side by side.
    public static func measure(model: LlamaModel, sequences: [TrainingSequence], adapter: LoRAAdapter?) throws -> Drift {
        var baseSum = 0.0, adapterSum = 0.0, klSum = 0.0, count = 0
        for seq in sequences {
            let inputs = Array(seq.tokens.dropLast())
            guard !inputs.isEmpty else { continue }
            let runs = [nil] + (adapter.map { [$0] } ?? [])
            let logits = try model.forward(runs.map {
                SequenceInput(tokens: inputs, cache: model.makeCache(capacity: inputs.count), allLogits: true, adapter: $0)
            }, mode: .exact)
            let base = logits[0], tuned = logits.last!
            for t in 0..<inputs.count where seq.lossMask[t + 1] {
                let p = logSoftmax(base[t]), q = logSoftmax(tuned[t])
                let target = seq.tokens[t + 1]
                baseSum -= Double(p[target])
                adapterSum -= Double(q[target])
                var kl = 0.0
                for i in p.indices where p[i] > -30 { kl += exp(Double(p[i])) * Double(p[i] - q[i]) }
                klSum += kl
                count += 1
            }
        }
        let bits = 1 / log(2.0), n = Double(max(count, 1))
        return Drift(baseNLL: baseSum / n * bits, adapterNLL: adapterSum / n * bits, kl: max(klSum / n * bits, 0))
    }

    static func logSoftmax(_ x: [Float]) -> [Float] {
        let m = x.max() ?? 0
        var sum = 0.0
        for v in x { sum += exp(Double(v - m)) }
        let lse = m + Float(log(sum))
        return x.map { $0 - lse }
    }
}
