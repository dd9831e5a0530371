import Foundation
import JSON
import Tokenizer

/// A served completion, as logged to `hone.completions` for feedback to refer to.
public struct CompletionRecord: Sendable, Equatable {
    public var id: String
    public var adapter: String?
    public var version: String
    public var messages: [ChatMessage]
    public var response: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var seconds: Double
    /// The geometric mean of the answer's token probabilities (nil: no token).
    public var confidence: Double?
    /// The answer's least likely token's probability (nil: no token).
    public var lowestTokenProbability: Double?

    public init(id: String, adapter: String?, version: String, messages: [ChatMessage], response: String,
                promptTokens: Int, completionTokens: Int, seconds: Double, confidence: (mean: Double, lowest: Double)? = nil) {
        self.confidence = confidence?.mean
        self.lowestTokenProbability = confidence?.lowest
        self.id = id
        self.adapter = adapter
        self.version = version
        self.messages = messages
        self.response = response
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.seconds = seconds
    }

    /// The messages as the JSON array stored in `hone.completions.messages`.
    public var messagesJSON: String {
        JSONValue.array(messages.map { .object(["role": .string($0.role), "content": .string($0.content)]) }).jsonText
    }
}

/// Where served completions are logged. `record` must return at once and never fail: a
/// slow or absent database may lose log rows, never a response.
public protocol CompletionRecorder: Sendable {
    func record(_ completion: CompletionRecord)
    /// Rows written, rows dropped, failed writes so far (for `/metrics`); nil when the
    /// recorder keeps no such counts.
    var health: (written: Int, dropped: Int, failures: Int)? { get }
}

extension CompletionRecorder {
    public var health: (written: Int, dropped: Int, failures: Int)? { nil }
}

/// Records nothing (no database configured).
public struct NoCompletionRecorder: CompletionRecorder {
    public init() {}
    public func record(_ completion: CompletionRecord) {}
}
