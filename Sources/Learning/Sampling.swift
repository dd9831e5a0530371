import Generation
import Llama
import Tokenizer

/// One completion the learner asks for.
public struct SampleRequest: Sendable {
    public var messages: [ChatMessage]
    /// 0 is greedy.
    public var temperature: Float
    public var seed: UInt64
    public var maxTokens: Int

    public init(messages: [ChatMessage], temperature: Float = 0, seed: UInt64 = 0, maxTokens: Int = 64) {
        self.messages = messages
        self.temperature = temperature
        self.seed = seed
        self.maxTokens = maxTokens
    }
}

/// Where the learner's generations come from. The daemon's is `SchedulerSampler` on its
/// learning-class batch scheduler; unit tests use small fakes.
public protocol TextSampler: Sendable {
    /// The completions of `requests`, in order, by the model with `adapter` (nil: the base).
    func complete(_ requests: [SampleRequest], adapter: LoRAAdapter?) async throws -> [String]
}

/// Samples through a batch scheduler, on the snapshot serving now. The daemon gives the
/// learner a scheduler of class `.learning`: its generations batch with each other, and
/// every client request goes first (ComputeScheduler).
public struct SchedulerSampler: TextSampler {
    let scheduler: BatchScheduler
    let snapshot: ModelSnapshot

    public init(scheduler: BatchScheduler, snapshot: ModelSnapshot) {
        self.scheduler = scheduler
        self.snapshot = snapshot
    }

    public func complete(_ requests: [SampleRequest], adapter: LoRAAdapter?) async throws -> [String] {
        let streams = try requests.map { r in
            let (tokens, turnStarts) = snapshot.chatTemplate.prompt(r.messages, with: snapshot.tokenizer)
            let sampling = SamplingParameters(temperature: r.temperature, topP: r.temperature > 0 ? 0.95 : 1, seed: r.seed)
            return try scheduler.submit(GenerationRequest(promptTokens: tokens, turnStarts: turnStarts, maxTokens: r.maxTokens, sampling: sampling),
                                        on: snapshot, adapter: adapter)
        }
        var out: [String] = []
        for stream in streams {
            var text = ""
            for try await event in stream {
                if case .finished(let result) = event { text = result.text }
            }
            out.append(text)
        }
        return out
    }
}
