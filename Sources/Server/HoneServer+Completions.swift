import Foundation
import Generation
import Hummingbird
import JSON
import NIOCore
import ServiceLifecycle
import Tokenizer

extension HoneServer {
    /// `/v1/chat/completions` (chat) and `/v1/completions` (text), streaming or not.
    func complete(_ request: Request, chat: Bool) async throws -> Response {
        guard inFlight.enter(limit: configuration.maxConcurrentRequests) else {
            var error = OpenAIError(.tooManyRequests, "The server is at capacity; retry shortly.", type: "rate_limit_error",
                                    code: "rate_limit_exceeded")
            error.headers[.retryAfter] = "1"
            throw error
        }
        var entered = true
        defer { if entered { inFlight.leave() } }
        let access = try authorize(request)
        let snapshot = try ready()
        let parsed = try await Self.body(of: request, limit: configuration.maxBodyBytes)
        let req = try CompletionRequest(body: parsed, chat: chat, configuration: configuration)
        // Another tenant's adapter is answered as if it did not exist.
        guard let (adapter, version) = snapshot.resolve(req.model), access.mayUse(adapter?.name) else {
            throw OpenAIError(.notFound, "The model `\(req.model)` does not exist or you do not have access to it.",
                              param: "model", code: "model_not_found")
        }
        let promptTokens: [Int], turnStarts: [Int]
        switch req.input {
        case .chat(let messages): (promptTokens, turnStarts) = snapshot.chatTemplate.prompt(messages, with: snapshot.tokenizer)
        case .text(let text): (promptTokens, turnStarts) = (snapshot.tokenizer.encodePrompt(text), [])
        }
        let context = snapshot.model.config.contextLength
        guard promptTokens.count <= configuration.maxPromptTokens else {
            throw OpenAIError(.badRequest, "The prompt has \(promptTokens.count) tokens; this server accepts at most \(configuration.maxPromptTokens).",
                              param: chat ? "messages" : "prompt", code: "prompt_too_long")
        }
        guard !promptTokens.isEmpty else {
            throw OpenAIError(.badRequest, "The prompt is empty.", param: chat ? "messages" : "prompt", code: "empty_prompt")
        }
        guard promptTokens.count + (req.maxTokens ?? 1) <= context else {
            throw OpenAIError(.badRequest, "This model's maximum context length is \(context) tokens. However, you requested \(promptTokens.count + (req.maxTokens ?? 1)) tokens (\(promptTokens.count) in the \(chat ? "messages" : "prompt"), \(req.maxTokens ?? 1) in the completion). Please reduce the length of the \(chat ? "messages" : "prompt") or completion.",
                              param: chat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        let maxTokens = min(req.maxTokens ?? configuration.maxCompletionTokens, context - promptTokens.count)
        let messages: [ChatMessage]
        switch req.input {
        case .chat(let m): messages = m
        case .text(let t): messages = [ChatMessage(role: "user", content: t)]
        }
        // An adapter of corrections answers only prompts that name one of their subjects.
        let weights = adapter?.weights(for: messages)
        var streams: [AsyncThrowingStream<GenerationEvent, Error>] = []
        for i in 0..<req.n {
            var sampling = req.sampling
            if let seed = sampling.seed { sampling.seed = seed &+ UInt64(i) }
            let generation = GenerationRequest(promptTokens: promptTokens, turnStarts: turnStarts, maxTokens: maxTokens, sampling: sampling,
                                               stop: req.stop, topLogprobs: req.logprobs ? req.topLogprobs : 0)
            streams.append(try scheduler.submit(generation, on: snapshot, adapter: weights))
        }
        let id = (chat ? "chatcmpl-" : "cmpl-") + Self.randomID()
        let created = Int(Date().timeIntervalSince1970)
        let started = ContinuousClock.now
        let recorder = recorder
        let metrics = metrics
        // The first choice is what feedback on this completion id refers to.
        let log: @Sendable (GenerationResult) -> Void = { result in
            metrics.tokens(prompt: promptTokens.count, completion: result.tokens.count)
            recorder.record(CompletionRecord(
                id: id, adapter: adapter?.name, version: version, messages: messages, response: result.text,
                promptTokens: promptTokens.count, completionTokens: result.tokens.count,
                seconds: (ContinuousClock.now - started) / .seconds(1), confidence: result.confidence))
        }
        var headers = HTTPFields()
        headers[.init("x-hone-version")!] = version
        if let adapter, adapter.scope != nil {
            headers[.init("x-hone-adapter-scope")!] = weights == nil ? "outside" : "covered"
        }
        let shape = ResponseShape(id: id, created: created, model: req.model, version: version, chat: chat,
                                  logprobs: req.logprobs, tokenizer: snapshot.tokenizer, promptTokens: promptTokens.count)
        guard req.stream else {
            var results: [GenerationResult] = []
            var steps: [[GenerationStep]] = []
            var first = true
            for stream in streams {
                var mine: [GenerationStep] = []
                for try await event in stream {
                    switch event {
                    case .step(let step):
                        if first { metrics.firstToken(seconds: (ContinuousClock.now - started) / .seconds(1)); first = false }
                        mine.append(step)
                    case .finished(let result): results.append(result)
                    }
                }
                steps.append(mine)
            }
            if let first = results.first { log(first) }
            return Self.json(shape.completion(results: results, steps: steps), headers: headers)
        }
        // The stream outlives this handler: its place is released when the body ends.
        entered = false
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let inFlight = inFlight
        let includeUsage = req.includeUsage
        let heartbeat = Duration.milliseconds(Int(configuration.heartbeatSeconds * 1000))
        let choiceStreams = streams
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { inFlight.leave() }
            var completionTokens = 0
            var firstToken = true
            do {
                for (index, stream) in choiceStreams.enumerated() {
                    if chat { try await writer.write(shape.sse(shape.chunk(index: index, role: true))) }
                    try await Self.withHeartbeats(stream, every: heartbeat) { item in
                        if Task.isShuttingDownGracefully { throw ShuttingDown() }
                        switch item {
                        case .heartbeat:
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        case .event(.step(let step)):
                            if firstToken { metrics.firstToken(seconds: (ContinuousClock.now - started) / .seconds(1)); firstToken = false }
                            guard !step.text.isEmpty || req.logprobs else { return }
                            try await writer.write(shape.sse(shape.chunk(index: index, step: step)))
                        case .event(.finished(let result)):
                            if index == 0 { log(result) }
                            completionTokens += result.tokens.count
                            try await writer.write(shape.sse(shape.chunk(index: index, finish: result.finishReason)))
                        }
                    }
                }
                if includeUsage {
                    try await writer.write(shape.sse(shape.usageChunk(completionTokens: completionTokens)))
                }
            } catch is ShuttingDown {
                // Graceful shutdown: end open streams now instead of holding the server up.
                let failure = OpenAIError(.serviceUnavailable, "The server is shutting down; the response was cut short.",
                                          type: "server_error", code: "server_shutting_down")
                try? await writer.write(shape.sse(failure.json))
            } catch {
                // The client went away (write failed) or generation failed: say so if we can.
                let failure = OpenAIError(.internalServerError, "Generation failed: \(error)", type: "server_error")
                try? await writer.write(shape.sse(failure.json))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        })
    }

    /// What a streaming response sends next: a generation event, or a heartbeat when none
    /// came for a while.
    enum Outgoing: Sendable {
        case event(GenerationEvent)
        case heartbeat
    }

    /// Feeds `body` the stream's events and a heartbeat every `interval` (an SSE comment
    /// costs a few bytes, so it is sent even between tokens). When `body` throws (the client went away), the stream is dropped, which stops
    /// its generation at the scheduler's next step.
    static func withHeartbeats(_ stream: AsyncThrowingStream<GenerationEvent, Error>, every interval: Duration,
                               _ body: (Outgoing) async throws -> Void) async throws {
        let (merged, continuation) = AsyncThrowingStream<Outgoing, Error>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await event in stream { continuation.yield(.event(event)) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: interval)
                    continuation.yield(.heartbeat)
                }
            }
            defer { group.cancelAll() }
            for try await item in merged { try await body(item) }
        }
    }

    /// The body as JSON: 413 over the limit, 400 for invalid UTF-8 or JSON.
    static func body(of request: Request, limit: Int) async throws -> JSONValue {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw OpenAIError(.contentTooLarge, "The request body is larger than \(limit) bytes.", code: "request_too_large")
        }
        return try parseBody(Data(buffer.readableBytesView))
    }

    /// A body's bytes as JSON: valid UTF-8 and JSON, else the OpenAI error a client gets.
    static func parseBody(_ bytes: Data) throws -> JSONValue {
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw OpenAIError(.badRequest, "The request body is not valid UTF-8.", code: "invalid_encoding")
        }
        do {
            return try JSONValue(parsing: bytes)
        } catch {
            throw OpenAIError(.badRequest, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                              code: "invalid_json")
        }
    }

    /// What the completion routes check in a body before any model work (encoding, JSON,
    /// every field); throws the `OpenAIError` a client would get. Exposed for fuzzing.
    public static func validateCompletionBody(_ bytes: Data, chat: Bool, configuration: ServerConfiguration) throws {
        _ = try CompletionRequest(body: parseBody(bytes), chat: chat, configuration: configuration)
    }

    static func randomID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        return String((0..<24).map { _ in alphabet.randomElement()! })
    }
}

/// Raised inside a streaming body when graceful shutdown begins.
struct ShuttingDown: Error {}

/// Builds OpenAI's response and chunk objects for one request.
struct ResponseShape: Sendable {
    let id: String
    let created: Int
    let model: String
    let version: String
    let chat: Bool
    let logprobs: Bool
    let tokenizer: Tokenizer
    let promptTokens: Int

    private var header: [String: JSONValue] {
        ["id": .string(id), "created": .int(created), "model": .string(model), "system_fingerprint": .string(version)]
    }

    func completion(results: [GenerationResult], steps: [[GenerationStep]]) -> JSONValue {
        var body = header
        body["object"] = .string(chat ? "chat.completion" : "text_completion")
        body["choices"] = .array(results.enumerated().map { i, r in
            var choice: [String: JSONValue] = ["index": .int(i), "finish_reason": .string(r.finishReason.rawValue),
                                               "logprobs": logprobs ? logprobsValue(steps[i]) : .null]
            if chat {
                choice["message"] = .object(["role": .string("assistant"), "content": .string(r.text), "refusal": .null])
            } else {
                choice["text"] = .string(r.text)
            }
            return .object(choice)
        })
        let completion = results.reduce(0) { $0 + $1.tokens.count }
        body["usage"] = usage(completion)
        return .object(body)
    }

    func chunk(index: Int, role: Bool = false, step: GenerationStep? = nil, finish: FinishReason? = nil) -> JSONValue {
        var body = header
        body["object"] = .string(chat ? "chat.completion.chunk" : "text_completion")
        var choice: [String: JSONValue] = ["index": .int(index), "finish_reason": finish.map { .string($0.rawValue) } ?? .null,
                                           "logprobs": (logprobs && step != nil) ? logprobsValue([step!]) : .null]
        let text = step?.text ?? ""
        if chat {
            var delta: [String: JSONValue] = [:]
            if role { delta["role"] = .string("assistant"); delta["content"] = .string("") }
            if step != nil { delta["content"] = .string(text) }
            choice["delta"] = .object(delta)
        } else {
            choice["text"] = .string(text)
        }
        body["choices"] = .array([.object(choice)])
        return .object(body)
    }

    func usageChunk(completionTokens: Int) -> JSONValue {
        var body = header
        body["object"] = .string(chat ? "chat.completion.chunk" : "text_completion")
        body["choices"] = .array([])
        body["usage"] = usage(completionTokens)
        return .object(body)
    }

    func sse(_ value: JSONValue) -> ByteBuffer {
        ByteBuffer(string: "data: \(value.jsonText)\n\n")
    }

    private func usage(_ completion: Int) -> JSONValue {
        .object(["prompt_tokens": .int(promptTokens), "completion_tokens": .int(completion),
                 "total_tokens": .int(promptTokens + completion)])
    }

    private func logprobsValue(_ steps: [GenerationStep]) -> JSONValue {
        func entry(_ token: Int, _ logprob: Float) -> [String: JSONValue] {
            let bytes = tokenizer.bytes(of: token)
            return ["token": .string(String(decoding: bytes, as: UTF8.self)), "logprob": .double(Double(logprob)),
                    "bytes": .array(bytes.map { .int(Int($0)) })]
        }
        let content: [JSONValue] = steps.filter { $0.choice.logprob != 0 || !$0.choice.top.isEmpty }.map { step in
            var e = entry(step.choice.token, step.choice.logprob)
            e["top_logprobs"] = .array(step.choice.top.map { .object(entry($0.token, $0.logprob)) })
            return .object(e)
        }
        return .object(["content": .array(content), "refusal": .null])
    }
}
