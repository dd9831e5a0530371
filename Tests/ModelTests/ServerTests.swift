import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Generation
import Hummingbird
import Synchronization
import JSON
import Llama
import Logging
import Server
import Testing
import Tokenizer

/// The OpenAI-compatible API over real HTTP on 127.0.0.1, on the real model.
@Suite("HTTP API", .enabled(if: RealModel.path != nil), .timeLimit(.minutes(5)))
struct ServerTests {
    static func snapshot() -> ModelSnapshot {
        ModelSnapshot(model: RealModel.model, tokenizer: RealModel.tokenizer, modelID: "smollm2", version: "base")
    }

    /// A running test server: real HTTP on 127.0.0.1, each request on its own connection.
    struct LiveServer: Sendable {
        let port: Int

        func get(_ path: String) async throws -> (Int, String, [AnyHashable: Any]) {
            try await send("GET", path, nil)
        }

        func post(_ path: String, _ body: String) async throws -> (Int, String, [AnyHashable: Any]) {
            try await send("POST", path, Data(body.utf8))
        }

        func post(_ path: String, bytes: [UInt8]) async throws -> (Int, String, [AnyHashable: Any]) {
            try await send("POST", path, Data(bytes))
        }

        private func send(_ method: String, _ path: String, _ body: Data?) async throws -> (Int, String, [AnyHashable: Any]) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.httpMethod = method
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            // Generous: the whole suite shares two cores with debug builds.
            request.timeoutInterval = 600
            let session = URLSession(configuration: .ephemeral)
            defer { session.finishTasksAndInvalidate() }
            let (data, response) = try await session.data(for: request)
            let http = response as! HTTPURLResponse
            return (http.statusCode, String(decoding: data, as: UTF8.self), http.allHeaderFields)
        }
    }

    /// Keeps what the server logs (a fake for the database-backed CompletionLog).
    final class RecordingRecorder: CompletionRecorder {
        let records = Mutex<[CompletionRecord]>([])
        func record(_ completion: CompletionRecord) { records.withLock { $0.append(completion) } }
    }

    /// Runs `body` against a live server on a free port with its own scheduler.
    func withServer(_ configure: (inout ServerConfiguration) -> Void = { _ in }, loaded: Bool = true,
                    recorder: CompletionRecorder = NoCompletionRecorder(),
                    _ body: @escaping @Sendable (LiveServer, SnapshotHolder, BatchScheduler) async throws -> Void) async throws {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configure(&configuration)
        let holder = SnapshotHolder(loaded ? Self.snapshot() : nil)
        let scheduler = BatchScheduler(maxBatch: 8)
        var logger = Logger(label: "hone.tests.server")
        logger.logLevel = .critical  // cancelling the server at the end logs errors by design
        let server = HoneServer(configuration: configuration, holder: holder, scheduler: scheduler, recorder: recorder, logger: logger)
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let app = server.application { port in portContinuation.yield(port) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await scheduler.run() }
            group.addTask { try await app.runService() }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            let port = await iterator.next()!
            try await body(LiveServer(port: port), holder, scheduler)
        }
    }

    static func greedy(_ content: String, maxTokens: Int) async throws -> String {
        try await offPool { try greedyNow(content, maxTokens: maxTokens) }
    }

    static func greedyNow(_ content: String, maxTokens: Int) throws -> String {
        let tokens = ChatTemplate(template: RealModel.tokenizer.chatTemplate)
            .tokenize([ChatMessage(role: "user", content: content)], with: RealModel.tokenizer)
        return try Generator(model: RealModel.model, tokenizer: RealModel.tokenizer)
            .generate(GenerationRequest(promptTokens: tokens, maxTokens: maxTokens)).text
    }

    static func chatBody(_ content: String, maxTokens: Int = 8, extra: String = "") -> String {
        #"{"model":"smollm2","messages":[{"role":"user","content":"\#(content)"}],"max_tokens":\#(maxTokens),"temperature":0\#(extra)}"#
    }

    @Test("health, readiness (503 until a snapshot is installed) and the model list")
    func healthAndModels() async throws {
        try await withServer(loaded: false) { client, holder, _ in
            #expect(try await client.get("/healthz").0 == 200)
            let notReady = try await client.get("/readyz")
            #expect(notReady.0 == 503)
            #expect(try JSONValue(parsing: notReady.1)["error"]?["code"] == .string("model_not_ready"))
            holder.install(Self.snapshot())
            #expect(try await client.get("/readyz").0 == 200)
            let models = try JSONValue(parsing: try await client.get("/v1/models").1)
            #expect(models["object"] == .string("list"))
            #expect(models["data"]?.arrayValue?.first?["id"] == .string("smollm2"))
        }
    }

    @Test("a greedy chat completion equals the engine's own greedy output and names its version")
    func chatCompletion() async throws {
        let expected = try await Self.greedy("What is the capital of France?", maxTokens: 12)
        let recorder = RecordingRecorder()
        try await withServer(recorder: recorder) { client, _, _ in
            let (status, text, headers) = try await client.post("/v1/chat/completions", Self.chatBody("What is the capital of France?", maxTokens: 12))
            #expect(status == 200)
            let body = try JSONValue(parsing: text)
            #expect(body["object"] == .string("chat.completion"))
            #expect(body["system_fingerprint"] == .string("base"))
            #expect(headers["x-hone-version"] as? String == "base")
            #expect(body["choices"]?.arrayValue?.first?["message"]?["content"] == .string(expected))
            #expect(body["usage"]?["completion_tokens"]?.intValue ?? 0 > 0)
            // Logged for feedback to refer to, under the id the client got.
            let logged = recorder.records.withLock { $0 }
            #expect(logged.map(\.id) == [body["id"]?.stringValue ?? "?"])
            #expect(logged.first?.response == expected)
            #expect(logged.first?.messages == [ChatMessage(role: "user", content: "What is the capital of France?")])
        }
    }

    @Test("streaming: SSE chunks add up to the non-streamed text, then usage and [DONE]")
    func streaming() async throws {
        let expected = try await Self.greedy("Name three colors.", maxTokens: 10)
        try await withServer { client, _, _ in
            let (status, text, headers) = try await client.post("/v1/chat/completions",
                Self.chatBody("Name three colors.", maxTokens: 10, extra: #","stream":true,"stream_options":{"include_usage":true}"#))
            #expect(status == 200)
            #expect(headers["Content-Type"] as? String == "text/event-stream")
            let events = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            #expect(events.last == "data: [DONE]")
            var content = ""
            var usage: JSONValue?
            var finish: String?
            for event in events.dropLast() {
                let chunk = try JSONValue(parsing: String(event.dropFirst("data: ".count)))
                #expect(chunk["object"] == .string("chat.completion.chunk"))
                if let u = chunk["usage"] { usage = u }
                guard let choice = chunk["choices"]?.arrayValue?.first else { continue }
                content += choice["delta"]?["content"]?.stringValue ?? ""
                finish = choice["finish_reason"]?.stringValue ?? finish
            }
            #expect(content == expected)
            #expect(finish == "length")
            #expect(usage?["completion_tokens"] == .int(10))
        }
    }

    @Test("concurrent requests are batched and each equals its output alone")
    func batchingDoesNotChangeOutputs() async throws {
        let prompts = ["What is 2 + 2?", "Name a fruit.", "Say hello in French.", "What color is the sky?"]
        var alone: [String] = []
        for p in prompts { alone.append(try await Self.greedy(p, maxTokens: 8)) }
        let expected = alone
        try await withServer { client, _, _ in
            let outputs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for (i, p) in prompts.enumerated() {
                    group.addTask {
                        let (_, text, _) = try await client.post("/v1/chat/completions", Self.chatBody(p))
                        return (i, try JSONValue(parsing: text)["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue ?? "")
                    }
                }
                var all = [String](repeating: "", count: prompts.count)
                for try await (i, t) in group { all[i] = t }
                return all
            }
            #expect(outputs == expected)
        }
    }

    @Test("bad input gets the documented error and the server keeps serving")
    func badInput() async throws {
        try await withServer({ $0.maxBodyBytes = 4096 }) { client, _, _ in
            let cases: [(String, String, Int, String)] = [
                ("/v1/chat/completions", "{not json", 400, "invalid_json"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":"hi"}"#, 400, "invalid_type"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":"x"}],"max_tokens":"5"}"#, 400, "invalid_type"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":"x"}],"bogus":1}"#, 400, ""),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":"x"}],"max_tokens":-3}"#, 400, "integer_below_min_value"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":"x"}],"max_tokens":100000000}"#, 400, "integer_above_max_value"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[]}"#, 400, "empty_array"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"wizard","content":"x"}]}"#, 400, "invalid_value"),
                ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":"x"}],"temperature":7}"#, 400, "decimal_above_max_value"),
                ("/v1/chat/completions", #"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#, 404, "model_not_found"),
                ("/v1/chat/completions", #"{"messages":[{"role":"user","content":"x"}]}"#, 400, "missing_required_parameter"),
                ("/v1/chat/completions", "[1,2,3]", 400, "invalid_body"),
                ("/v1/chat/completions", String(repeating: "x", count: 10_000), 413, "request_too_large"),
                ("/v1/nowhere", "{}", 404, "unknown_url"),
            ]
            for (path, body, status, code) in cases {
                let (s, text, _) = try await client.post(path, body)
                #expect(s == status, "\(body.prefix(60))")
                let error = try JSONValue(parsing: text)["error"]
                #expect(error?["message"]?.stringValue?.isEmpty == false, "\(body.prefix(60)): \(text)")
                if !code.isEmpty { #expect(error?["code"] == .string(code), "\(body.prefix(60)): \(text)") }
            }
            // Invalid UTF-8 in the body.
            let raw = try await client.post("/v1/chat/completions", bytes: Array(#"{"model":"smollm2","x":""#.utf8) + [0xff, 0xfe] + Array("\"}".utf8))
            #expect(raw.0 == 400)
            #expect(try JSONValue(parsing: raw.1)["error"]?["code"] == .string("invalid_encoding"))
            // Still serving.
            let (ok, _, _) = try await client.post("/v1/chat/completions", Self.chatBody("Hi", maxTokens: 2))
            #expect(ok == 200)
        }
    }

    @Test("over capacity: 429 with Retry-After")
    func overCapacity() async throws {
        try await withServer({ $0.maxConcurrentRequests = 1 }) { client, _, scheduler in
            async let long = client.post("/v1/chat/completions", Self.chatBody("Tell me a long story.", maxTokens: 40))
            // The scheduler's load is the server's own signal that the long request is in.
            var inFlight = false
            for _ in 0..<3000 where !inFlight {
                inFlight = scheduler.load > 0
                if !inFlight { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(inFlight)
            let (s, text, headers) = try await client.post("/v1/chat/completions", Self.chatBody("Hi", maxTokens: 1))
            #expect(s == 429)
            #expect(headers["Retry-After"] as? String == "1")
            #expect(try JSONValue(parsing: text)["error"]?["type"] == .string("rate_limit_error"))
            #expect(try await long.0 == 200)
        }
    }

    @Test("text completions and logprobs")
    func completionsAndLogprobs() async throws {
        try await withServer { client, _, _ in
            let (s, text, _) = try await client.post("/v1/completions",
                #"{"model":"smollm2","prompt":"The capital of France is","max_tokens":3,"temperature":0}"#)
            #expect(s == 200)
            let body = try JSONValue(parsing: text)
            #expect(body["object"] == .string("text_completion"))
            #expect(body["choices"]?.arrayValue?.first?["text"]?.stringValue?.isEmpty == false)
            let (s2, text2, _) = try await client.post("/v1/chat/completions",
                Self.chatBody("Hi", maxTokens: 3, extra: #","logprobs":true,"top_logprobs":2"#))
            #expect(s2 == 200)
            let content = try JSONValue(parsing: text2)["choices"]?.arrayValue?.first?["logprobs"]?["content"]?.arrayValue ?? []
            #expect(!content.isEmpty)
            for entry in content {
                #expect((entry["logprob"]?.doubleValue ?? 1) <= 0)
                #expect(entry["top_logprobs"]?.arrayValue?.count == 2)
            }
        }
    }
}
