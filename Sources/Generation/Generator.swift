import Foundation
import Llama
import Tokenizer

/// What to generate.
public struct GenerationRequest: Sendable {
    public var promptTokens: [Int]
    /// Where the prompt's turns begin (`ChatTemplate.prompt`): it is prefilled in chunks
    /// ending there, and prefixes ending there may be shared (`PrefixCache`).
    public var turnStarts: [Int]
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// Generation ends before any of these strings; they are not part of the text.
    public var stop: [String]
    /// How many alternatives to report per token (0: none).
    public var topLogprobs: Int

    public init(promptTokens: [Int], turnStarts: [Int] = [], maxTokens: Int = 256, sampling: SamplingParameters = .init(), stop: [String] = [],
                topLogprobs: Int = 0) {
        self.promptTokens = promptTokens
        self.turnStarts = turnStarts
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
        self.topLogprobs = topLogprobs
    }
}

/// Why generation ended (OpenAI's `finish_reason`).
public enum FinishReason: String, Sendable {
    case stop, length
}

/// One step of output: the chosen token and the text that became final with it.
public struct GenerationStep: Sendable {
    public let choice: TokenChoice
    /// Text safe to show now (complete UTF-8, never part of a stop string).
    public let text: String
}

/// The whole result of a generation.
public struct GenerationResult: Sendable {
    public var tokens: [Int] = []
    public var text = ""
    public var finishReason: FinishReason = .length
    public var promptTokenCount = 0
    /// ln p of each of `tokens` under the model's distribution (before temperature and filters).
    public var logprobs: [Float] = []

    /// How sure the model was of this answer: the geometric mean of its tokens'
    /// probabilities, and the lowest of them; nil when no token was generated.
    public var confidence: (mean: Double, lowest: Double)? {
        guard !logprobs.isEmpty else { return nil }
        let mean = logprobs.reduce(0.0) { $0 + Double($1) } / Double(logprobs.count)
        return (exp(mean), exp(Double(logprobs.min()!)))
    }
}

/// Runs one sequence: prefill the prompt, then decode token by token until EOS, a stop
/// string or max tokens.
public struct Generator: Sendable {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let mode: MatmulMode
    /// The LoRA adapter applied (unmerged), or nil for the base model.
    public let adapter: LoRAAdapter?

    public init(model: LlamaModel, tokenizer: Tokenizer, mode: MatmulMode = .fast, adapter: LoRAAdapter? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.mode = mode
        self.adapter = adapter
    }

    /// Generates, calling `onStep` for every token as it is chosen.
    public func generate(_ request: GenerationRequest, onStep: (GenerationStep) throws -> Void = { _ in }) throws -> GenerationResult {
        var state = try DecodingState(request: request, tokenizer: tokenizer, contextLength: model.config.contextLength)
        let cache = model.makeCache(capacity: state.cacheCapacity)
        var logits = try model.prefill(request.promptTokens, turnStarts: request.turnStarts, cache: cache, adapter: adapter, mode: mode)
        while true {
            switch state.accept(logits: logits) {
            case .next(let step):
                try onStep(step)
                logits = try model.forward([SequenceInput(tokens: [step.choice.token], cache: cache, adapter: adapter)], mode: mode)[0][0]
            case .finished(let step):
                if let step { try onStep(step) }
                return state.result
            }
        }
    }
}

/// Holds back text that might be the start of a stop string, and cuts at the first stop.
public struct StopMatcher: Sendable {
    let stops: [String]
    var held = ""

    public init(stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds text; returns what can be shown and whether a stop string was reached.
    public mutating func feed(_ text: String) -> (String, Bool) {
        held += text
        guard !stops.isEmpty else { defer { held = "" }; return (held, false) }
        var earliest: String.Index?
        for s in stops {
            if let r = held.range(of: s), earliest == nil || r.lowerBound < earliest! { earliest = r.lowerBound }
        }
        if let cut = earliest {
            let out = String(held[..<cut])
            held = ""
            return (out, true)
        }
        // Keep the longest tail that is a prefix of some stop string.
        var keep = 0
        for s in stops {
            for n in stride(from: min(s.count - 1, held.count), to: 0, by: -1) where held.hasSuffix(s.prefix(n)) {
                keep = max(keep, n)
                break
            }
        }
        let split = held.index(held.endIndex, offsetBy: -keep)
        let out = String(held[..<split])
        held = String(held[split...])
        return (out, false)
    }

    /// The held-back text at the end of generation.
    public mutating func finish(_ text: String) -> String {
        let (out, stopped) = feed(text)
        if stopped { return out }
        defer { held = "" }
        return out + held
    }
}
