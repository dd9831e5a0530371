import Llama
import Tokenizer

/// One sequence's progress through generation: sampling, end-of-generation tokens, stop
/// strings, max tokens and UTF-8-safe text. The single-sequence `Generator` and the
/// batching `BatchScheduler` both drive it, so both decide alike.
public struct DecodingState: Sendable {
    public let request: GenerationRequest
    public let maxTokens: Int
    public private(set) var result: GenerationResult
    private var sampler: Sampler
    private var stopper: StopMatcher
    private var decoder = StreamingDecoder()
    private var context: [Int]
    private let tokenizer: Tokenizer

    /// What one sampled token did.
    public enum Outcome: Sendable {
        /// A token was added; feed its id to the model next.
        case next(GenerationStep)
        /// Generation ended; `step` carries the last text, if any.
        case finished(GenerationStep?)
    }

    /// - Throws: ModelError when the prompt is empty or does not fit the context.
    public init(request: GenerationRequest, tokenizer: Tokenizer, contextLength: Int) throws {
        guard !request.promptTokens.isEmpty else { throw ModelError("the prompt has no tokens") }
        guard request.promptTokens.count < contextLength else {
            throw ModelError("the prompt has \(request.promptTokens.count) tokens; the context holds \(contextLength)")
        }
        self.request = request
        self.tokenizer = tokenizer
        maxTokens = min(request.maxTokens, contextLength - request.promptTokens.count)
        result = GenerationResult(promptTokenCount: request.promptTokens.count)
        sampler = Sampler(request.sampling)
        stopper = StopMatcher(stops: request.stop)
        context = request.promptTokens
    }

    /// Tokens the KV cache must hold for this sequence at most.
    public var cacheCapacity: Int { request.promptTokens.count + maxTokens }

    /// Samples from the logits of the latest position.
    public mutating func accept(logits: [Float]) -> Outcome {
        guard result.tokens.count < maxTokens else { return finish(.length) }
        let choice = sampler.choose(logits: logits, context: context, topLogprobs: request.topLogprobs)
        if tokenizer.endOfGeneration.contains(choice.token) { return finish(.stop) }
        result.tokens.append(choice.token)
        result.logprobs.append(choice.logprob)
        context.append(choice.token)
        let (text, stopped) = stopper.feed(decoder.append(tokenizer.bytes(of: choice.token)))
        result.text += text
        let step = GenerationStep(choice: choice, text: text)
        if stopped {
            result.finishReason = .stop
            return .finished(step)
        }
        if result.tokens.count == maxTokens {
            let rest = stopper.finish(decoder.finish())
            result.text += rest
            result.finishReason = .length
            return .finished(GenerationStep(choice: choice, text: text + rest))
        }
        return .next(step)
    }

    private mutating func finish(_ reason: FinishReason) -> Outcome {
        result.finishReason = reason
        let rest = stopper.finish(decoder.finish())
        result.text += rest
        guard !rest.isEmpty, let last = result.tokens.last else { return .finished(nil) }
        return .finished(GenerationStep(choice: TokenChoice(token: last, logprob: 0, top: []), text: rest))
    }
}
