import Foundation
import Generation
import JSON
import Tokenizer

/// A validated `/v1/chat/completions` or `/v1/completions` request.
struct CompletionRequest: Sendable {
    enum Input: Sendable {
        case chat([ChatMessage])
        case text(String)
    }
    var model: String
    var input: Input
    var maxTokens: Int?
    var sampling = SamplingParameters()
    var stop: [String] = []
    var n = 1
    var stream = false
    var includeUsage = false
    var logprobs = false
    var topLogprobs = 0

    /// Fields OpenAI's clients may send that are accepted; those not acted on are listed.
    static let chatFields: Set<String> = [
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n",
        "stream", "stream_options", "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "user",
        "repetition_penalty", "top_k",
    ]
    static let completionFields: Set<String> = [
        "model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream", "stream_options",
        "logprobs", "frequency_penalty", "presence_penalty", "user", "repetition_penalty", "top_k", "echo", "suffix",
    ]

    /// Parses and validates a body; every problem is an OpenAIError naming the field.
    init(body: JSONValue, chat: Bool, configuration: ServerConfiguration) throws {
        guard case .object(let fields) = body else {
            throw OpenAIError(.badRequest, "The request body must be a JSON object.", code: "invalid_body")
        }
        let allowed = chat ? Self.chatFields : Self.completionFields
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw OpenAIError(.badRequest, "Unrecognized request argument supplied: \(unknown)", param: unknown)
        }
        func string(_ key: String) throws -> String? {
            guard let v = fields[key], v != .null else { return nil }
            guard case .string(let s) = v else { throw OpenAIError.invalidType(key, expected: "a string", got: v) }
            return s
        }
        func integer(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let v = fields[key], v != .null else { return nil }
            guard case .int(let i) = v else { throw OpenAIError.invalidType(key, expected: "an integer", got: v) }
            guard range.contains(i) else {
                throw OpenAIError(.badRequest, "Invalid '\(key)': \(i) is out of range. Expected a value in \(range.lowerBound)...\(range.upperBound).",
                                  param: key, code: i < range.lowerBound ? "integer_below_min_value" : "integer_above_max_value")
            }
            return i
        }
        func number(_ key: String, _ range: ClosedRange<Double>) throws -> Double? {
            guard let v = fields[key], v != .null else { return nil }
            guard let d = v.doubleValue else { throw OpenAIError.invalidType(key, expected: "a number", got: v) }
            guard range.contains(d) else {
                throw OpenAIError(.badRequest, "Invalid '\(key)': \(d) is out of range. Expected a value in \(range.lowerBound)...\(range.upperBound).",
                                  param: key, code: d < range.lowerBound ? "decimal_below_min_value" : "decimal_above_max_value")
            }
            return d
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = fields[key], v != .null else { return nil }
            guard case .bool(let b) = v else { throw OpenAIError.invalidType(key, expected: "a boolean", got: v) }
            return b
        }

        guard let model = try string("model") else {
            throw OpenAIError(.badRequest, "You must provide a model parameter.", param: "model", code: "missing_required_parameter")
        }
        self.model = model
        if chat {
            guard let raw = fields["messages"] else {
                throw OpenAIError(.badRequest, "Missing required parameter: 'messages'.", param: "messages", code: "missing_required_parameter")
            }
            guard case .array(let items) = raw else { throw OpenAIError.invalidType("messages", expected: "an array", got: raw) }
            guard !items.isEmpty else {
                throw OpenAIError(.badRequest, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                                  param: "messages", code: "empty_array")
            }
            input = .chat(try items.enumerated().map { i, item in try Self.message(item, index: i) })
        } else {
            guard let raw = fields["prompt"] else {
                throw OpenAIError(.badRequest, "Missing required parameter: 'prompt'.", param: "prompt", code: "missing_required_parameter")
            }
            switch raw {
            case .string(let s): input = .text(s)
            case .array(let parts) where parts.count == 1 && parts[0].stringValue != nil: input = .text(parts[0].stringValue!)
            default: throw OpenAIError.invalidType("prompt", expected: "a string", got: raw)
            }
        }
        let limit = configuration.maxCompletionTokens
        maxTokens = try integer("max_completion_tokens", 1...limit) ?? integer("max_tokens", 1...limit)
        sampling.temperature = Float(try number("temperature", 0...2) ?? 1)
        sampling.topP = Float(try number("top_p", 0...1) ?? 1)
        if sampling.topP == 0 { sampling.temperature = 0 }
        sampling.topK = try integer("top_k", 0...1_000_000) ?? 0
        sampling.repetitionPenalty = Float(try number("repetition_penalty", 0.01...10) ?? 1)
        _ = try number("frequency_penalty", -2...2)
        _ = try number("presence_penalty", -2...2)
        _ = try string("user")
        if let v = fields["seed"], v != .null {
            guard case .int(let seed) = v else { throw OpenAIError.invalidType("seed", expected: "an integer", got: v) }
            sampling.seed = UInt64(bitPattern: Int64(seed))
        }
        n = try integer("n", 1...configuration.maxChoices) ?? 1
        stream = try bool("stream") ?? false
        if let options = fields["stream_options"], options != .null {
            guard case .object(let o) = options else { throw OpenAIError.invalidType("stream_options", expected: "an object", got: options) }
            guard stream else {
                throw OpenAIError(.badRequest, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param: "stream_options")
            }
            if let u = o["include_usage"] {
                guard case .bool(let b) = u else { throw OpenAIError.invalidType("stream_options.include_usage", expected: "a boolean", got: u) }
                includeUsage = b
            }
        }
        switch fields["stop"] ?? .null {
        case .null: break
        case .string(let s): stop = [s]
        case .array(let items):
            guard items.count <= 4 else {
                throw OpenAIError(.badRequest, "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length \(items.count) instead.",
                                  param: "stop", code: "array_above_max_length")
            }
            stop = try items.map { item in
                guard case .string(let s) = item else { throw OpenAIError.invalidType("stop", expected: "a string or an array of strings", got: item) }
                return s
            }
        case let other: throw OpenAIError.invalidType("stop", expected: "a string or an array of strings", got: other)
        }
        if chat {
            logprobs = try bool("logprobs") ?? false
            topLogprobs = try integer("top_logprobs", 0...20) ?? 0
            if topLogprobs > 0 && !logprobs {
                throw OpenAIError(.badRequest, "Invalid value for 'top_logprobs': 'logprobs' must be set to true.", param: "top_logprobs")
            }
        } else if let lp = try integer("logprobs", 0...5) {
            logprobs = true
            topLogprobs = lp
        }
    }

    static func message(_ value: JSONValue, index: Int) throws -> ChatMessage {
        let param = "messages[\(index)]"
        guard case .object(let m) = value else { throw OpenAIError.invalidType(param, expected: "an object", got: value) }
        guard let roleValue = m["role"] else {
            throw OpenAIError(.badRequest, "Missing required parameter: '\(param).role'.", param: "\(param).role", code: "missing_required_parameter")
        }
        guard case .string(let role) = roleValue else { throw OpenAIError.invalidType("\(param).role", expected: "a string", got: roleValue) }
        guard ["system", "developer", "user", "assistant"].contains(role) else {
            throw OpenAIError(.badRequest, "Invalid value: '\(role)'. Supported values are: 'system', 'developer', 'user' and 'assistant'.",
                              param: "\(param).role", code: "invalid_value")
        }
        let content: String
        switch m["content"] ?? .null {
        case .string(let s): content = s
        case .array(let parts):
            content = try parts.enumerated().map { j, part in
                guard part["type"]?.stringValue == "text", let text = part["text"]?.stringValue else {
                    throw OpenAIError(.badRequest, "Invalid '\(param).content[\(j)]': only text parts are supported.",
                                      param: "\(param).content[\(j)]", code: "invalid_value")
                }
                return text
            }.joined()
        case .null:
            throw OpenAIError(.badRequest, "Missing required parameter: '\(param).content'.", param: "\(param).content", code: "missing_required_parameter")
        case let other:
            throw OpenAIError.invalidType("\(param).content", expected: "a string or an array of text parts", got: other)
        }
        return ChatMessage(role: role == "developer" ? "system" : role, content: content)
    }
}
