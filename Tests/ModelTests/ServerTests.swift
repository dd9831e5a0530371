import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Generation
import Hummingbird
import Synchronization
import Tensor
import JSON
import Llama
import Logging
import Server
import Testing
import Tokenizer
import Training
import HoneDaemon
import Postgres

/// The OpenAI-compatible API over real HTTP on 127.0.0.1, on the real model.
@Suite("HTTP API", .enabled(if: RealModel.path != nil), .timeLimit(.minutes(5)))
struct ServerTests {
    static func snapshot() -> ModelSnapshot {
        ModelSnapshot(model: RealModel.model, tokenizer: RealModel.tokenizer, modelID: "smollm2", version: "base")
    }

    /// A running test server: real HTTP on 127.0.0.1, each request on its own connection.
    struct LiveServer: Sendable {
        let port: Int

        func get(_ path: String, headers: [String: String] = [:]) async throws -> (Int, String, [AnyHashable: Any]) {
            try await send("GET", path, nil, headers: headers)
        }

        func post(_ path: String, _ body: String, headers: [String: String] = [:]) async throws -> (Int, String, [AnyHashable: Any]) {
            try await send("POST", path, Data(body.utf8), headers: headers)
        }

        func post(_ path: String, bytes: [UInt8]) async throws -> (Int, String, [AnyHashable: Any]) {
            try await send("POST", path, Data(bytes))
        }

        /// The chat completions (response bodies) of `model` for `questions` (one user turn
        /// each, greedy), in order. Sent all at once, as concurrent clients would: the server
        /// batches them, and its decode is batch-invariant, so each is what it gives alone.
        func completions(_ questions: [String], model: String, maxTokens: Int) async throws -> [JSONValue] {
            try await withThrowingTaskGroup(of: (Int, JSONValue).self) { group in
                for (i, question) in questions.enumerated() {
                    group.addTask {
                        let (status, body, _) = try await post("/v1/chat/completions", ServerTests.chatBody(question, maxTokens: maxTokens, model: model))
                        guard status == 200 else { throw ReplicaTests.SnapshotTestError("\(model) answered \(status): \(body.prefix(300))") }
                        return (i, try JSONValue(parsing: body))
                    }
                }
                var out = [JSONValue](repeating: .null, count: questions.count)
                for try await (i, body) in group { out[i] = body }
                return out
            }
        }

        /// The answers' texts of `completions(_:model:maxTokens:)`.
        func answers(_ questions: [String], model: String, maxTokens: Int) async throws -> [String] {
            try await completions(questions, model: model, maxTokens: maxTokens).map {
                $0["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue ?? ""
            }
        }

        private func send(_ method: String, _ path: String, _ body: Data?, headers: [String: String] = [:]) async throws -> (Int, String, [AnyHashable: Any]) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.httpMethod = method
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
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
        let scheduler = BatchScheduler(maxBatch: 8, compute: ComputeScheduler())
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

    static func greedyNow(_ content: String, maxTokens: Int, adapter: LoRAAdapter? = nil) throws -> String {
        let tokens = RealModel.tokenizer.chatTemplate
            .tokenize([ChatMessage(role: "user", content: content)], with: RealModel.tokenizer)
        return try Generator(model: RealModel.model, tokenizer: RealModel.tokenizer, adapter: adapter)
            .generate(GenerationRequest(promptTokens: tokens, maxTokens: maxTokens)).text
    }

    static func chatBody(_ content: String, maxTokens: Int = 8, model: String = "smollm2", extra: String = "") -> String {
        #"{"model":"\#(model)","messages":[{"role":"user","content":"\#(content)"}],"max_tokens":\#(maxTokens),"temperature":0\#(extra)}"#
    }

    /// The data events of an SSE body (comments such as heartbeats dropped), as JSON, and
    /// whether it ended with `[DONE]`.
    static func events(_ body: String) throws -> (chunks: [JSONValue], done: Bool) {
        let events = body.components(separatedBy: "\n\n").filter { !$0.isEmpty && !$0.hasPrefix(":") }
        let done = events.last == "data: [DONE]"
        return (try events.dropLast(done ? 1 : 0).map { try JSONValue(parsing: String($0.dropFirst("data: ".count))) }, done)
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
            let events = text.components(separatedBy: "\n\n").filter { !$0.isEmpty && !$0.hasPrefix(":") }
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

/// Adapters served beside the base, atomic swaps, heartbeats and disconnects.
@Suite("HTTP API: adapters and swaps", .enabled(if: RealModel.path != nil), .timeLimit(.minutes(8)))
struct AdapterServingTests {
    /// Two random adapters whose greedy answers differ from each other and from the base.
    static let adapters: [ServedAdapter] = (0..<2).map { i in
        let weights = TrainingParityTests.seededAdapter(LoRAConfig(rank: 4, alpha: 8), RealModel.model.config,
                                                        seed: UInt64(10 + i), scaleA: 0.05, scaleB: 0.05)
        return ServedAdapter(name: "swap", version: "swap@\(i + 1)", weights: weights, baseModelSHA256: RealModel.model.file.sha256)
    }
    static let prompt = "Name a color."

    @Test("adapters are listed as base:name, answer with their version, and a broken one is never served")
    func adaptersAreServed() async throws {
        let expected = try await offPool { try ServerTests.greedyNow(Self.prompt, maxTokens: 8, adapter: Self.adapters[0].shards.general!.weights) }
        try await ServerTests().withServer { client, holder, _ in
            try holder.install(Self.adapters[0])
            let models = try JSONValue(parsing: try await client.get("/v1/models").1)
            #expect(models["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["smollm2", "smollm2:swap"])
            let (status, text, headers) = try await client.post("/v1/chat/completions", ServerTests.chatBody(Self.prompt, model: "smollm2:swap"))
            #expect(status == 200)
            let body = try JSONValue(parsing: text)
            #expect(body["system_fingerprint"] == .string("swap@1"))
            #expect(headers["x-hone-version"] as? String == "swap@1")
            #expect(body["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue == expected)
            #expect(try await client.post("/v1/chat/completions", ServerTests.chatBody(Self.prompt, model: "smollm2:nope")).0 == 404)

            // Broken adapters: NaN weights, another base model, another shape.
            var nan = Self.adapters[1].shards.general!.weights
            nan.weights[LoRAKey(layer: 3, target: .up)]!.b[0] = .nan
            let other = LoRAAdapter.zeros(config: LoRAConfig(rank: 4), model: { var c = RealModel.model.config; c.layers = 2; return c }())
            for broken in [ServedAdapter(name: "swap", version: "swap@nan", weights: nan, baseModelSHA256: nil),
                           ServedAdapter(name: "swap", version: "swap@other-base", weights: Self.adapters[1].shards.general!.weights, baseModelSHA256: "00ff"),
                           ServedAdapter(name: "swap", version: "swap@shape", weights: other, baseModelSHA256: nil)] {
                #expect(throws: (any Error).self) { try holder.install(broken) }
            }
            let after = try JSONValue(parsing: try await client.post("/v1/chat/completions", ServerTests.chatBody(Self.prompt, model: "smollm2:swap")).1)
            #expect(after["system_fingerprint"] == .string("swap@1"))
            #expect(holder.swaps == 1)
        }
    }

    @Test("8 streaming clients while the adapter is swapped ≥ 100 times: no failure, every answer is its version's")
    func swapUnderLoad() async throws {
        let references = try await offPool {
            try Self.adapters.map { try ServerTests.greedyNow(Self.prompt, maxTokens: 4, adapter: $0.shards.general!.weights) }
        }
        #expect(references[0] != references[1])
        try await ServerTests().withServer({ $0.maxConcurrentRequests = 64 }) { client, holder, _ in
            try holder.install(Self.adapters[0])
            final class Flag: Sendable {
                let on = Atomic<Bool>(true)
                let completed = Atomic<Int>(0)
            }
            let swapping = Flag()
            let outcome = try await withThrowingTaskGroup(of: [(Int, String, String, Bool)].self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        var mine: [(Int, String, String, Bool)] = []
                        while swapping.on.load(ordering: .relaxed) || mine.isEmpty {
                            let (status, text, _) = try await client.post("/v1/chat/completions",
                                ServerTests.chatBody(Self.prompt, maxTokens: 4, model: "smollm2:swap", extra: #","stream":true"#))
                            let (chunks, done) = try ServerTests.events(text)
                            let version = chunks.first?["system_fingerprint"]?.stringValue ?? "?"
                            let content = chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue }.joined()
                            let failed = chunks.contains { $0["error"] != nil }
                            mine.append((status, version, content, done && !failed))
                            swapping.completed.wrappingAdd(1, ordering: .relaxed)
                        }
                        return mine
                    }
                }
                // At least 100 swaps, and on until the clients have finished 24 responses,
                // so requests start (and run) under many different versions.
                var i = 0
                while i < 100 || swapping.completed.load(ordering: .relaxed) < 24 {
                    i += 1
                    // Validation reads every weight: off the cooperative threads the HTTP
                    // server needs, as a version watcher would.
                    let next = Self.adapters[i % 2]
                    try await offPool { try holder.install(next) }
                    try await Task.sleep(for: .milliseconds(50))
                }
                let swaps = i
                swapping.on.store(false, ordering: .relaxed)
                var all: [(Int, String, String, Bool)] = []
                for try await part in group { all += part }
                return (all, swaps)
            }
            let (results, swaps) = outcome
            #expect(holder.swaps == swaps + 1 && swaps >= 100)
            #expect(Set(results.map(\.1)) == ["swap@1", "swap@2"])
            #expect(results.count >= 8)
            #expect(results.allSatisfy { $0.0 == 200 && $0.3 }, "every request succeeds and ends with [DONE]")
            for (_, version, content, _) in results {
                let index = version == "swap@1" ? 0 : version == "swap@2" ? 1 : -1
                #expect(index >= 0 && content == references[max(index, 0)], "\(version): \(content)")
            }
            print("swap test: \(results.count) streamed responses over \(swaps) swaps; versions seen: \(Set(results.map(\.1)).sorted())")
        }
    }

    @Test("SSE comment heartbeats keep a slow stream alive; the prompt-token limit answers 400")
    func heartbeatsAndPromptLimit() async throws {
        try await ServerTests().withServer({ $0.heartbeatSeconds = 0.005; $0.maxPromptTokens = 200 }) { client, _, _ in
            let long = String(repeating: "The history of science is long. ", count: 12)
            let (status, text, _) = try await client.post("/v1/chat/completions",
                ServerTests.chatBody(long, maxTokens: 4, extra: #","stream":true"#))
            #expect(status == 200)
            #expect(text.contains(": keep-alive\n\n"))
            let (chunks, done) = try ServerTests.events(text)
            #expect(done && !chunks.isEmpty)
            let tooLong = String(repeating: "word ", count: 400)
            let (code, body, _) = try await client.post("/v1/chat/completions", ServerTests.chatBody(tooLong))
            #expect(code == 400)
            #expect(try JSONValue(parsing: body)["error"]?["code"] == .string("prompt_too_long"))
        }
    }

    @Test("a client that disconnects mid-stream stops its generation")
    func disconnectStopsGeneration() async throws {
        try await ServerTests().withServer { client, _, scheduler in
            let body = ServerTests.chatBody("Tell me a very long story.", maxTokens: 1500, extra: #","stream":true"#)
            let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(client.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(connected == 0)
            _ = request.withCString { write(fd, $0, strlen($0)) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            var received = ""
            // The role chunk, then two token chunks: generation is under way.
            while received.components(separatedBy: "chat.completion.chunk").count <= 3 {
                let n = read(fd, &buffer, buffer.count)
                guard n > 0 else { break }
                received += String(decoding: buffer[0..<n], as: UTF8.self)
            }
            #expect(scheduler.load == 1)
            close(fd)
            var waited = 0
            while scheduler.load > 0 && waited < 600 {
                try await Task.sleep(for: .milliseconds(50))
                waited += 1
            }
            #expect(scheduler.load == 0, "the generation kept running after the client left")
        }
    }
}

/// `/metrics`, and serving through a database outage.
@Suite("HTTP API: metrics and outages", .enabled(if: RealModel.path != nil), .timeLimit(.minutes(5)))
struct MetricsTests {
    @Test("serving keeps working with PostgreSQL down; /metrics reports requests, tokens, versions and the log's failures")
    func metricsAndDatabaseOutage() async throws {
        var logger = Logger(label: "hone.tests.outage")
        logger.logLevel = .critical
        // Nothing listens on port 1: every write to hone.completions fails at once.
        let pool = PostgresPool(conninfo: "host=127.0.0.1 port=1 dbname=hone user=hone", size: 1, connectTimeout: .seconds(1), logger: logger)
        let log = CompletionLog(pool: pool, interval: .milliseconds(20), logger: logger)
        try await ServerTests().withServer(recorder: log) { client, holder, _ in
            try holder.install(AdapterServingTests.adapters[0])
            let (status, _, _) = try await client.post("/v1/chat/completions", ServerTests.chatBody("Name a color.", maxTokens: 4))
            #expect(status == 200)
            #expect(try await client.post("/v1/chat/completions", ServerTests.chatBody("Hi", model: "nope")).0 == 404)
            await log.flush()
            let (code, text, headers) = try await client.get("/metrics")
            #expect(code == 200)
            #expect((headers["Content-Type"] as? String)?.hasPrefix("text/plain; version=0.0.4") == true)
            for line in ["hone_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1",
                         "hone_requests_total{endpoint=\"/v1/chat/completions\",status=\"404\"} 1",
                         "hone_tokens_total{kind=\"completion\"} 4",
                         "hone_active_version{model=\"smollm2\",version=\"base\"} 1",
                         "hone_active_version{model=\"smollm2:swap\",version=\"swap@1\"} 1",
                         "hone_swaps_total 1",
                         "hone_time_to_first_token_seconds_count 1",
                         "hone_completion_log_rows_total{outcome=\"written\"} 0"] {
                #expect(text.contains(line + "\n"), "missing: \(line)")
            }
            // What the figures were computed on: the kernel level in use, which HONE_KERNELS may lower.
            let info = text.split(separator: "\n").first { $0.hasPrefix("hone_build_info{") }.map(String.init) ?? ""
            #expect(info.contains("kernels=\"\(KernelLevel.active)\"") && info.contains("cpu_kernels=\"\(KernelLevel.cpu)\"")
                    && info.contains("blas_core_type=") && info.hasSuffix(" 1"), "hone_build_info: \(info)")
            // The request's decode ran as serving work, on a core: its CPU seconds are counted.
            let busy = text.split(separator: "\n").first { $0.hasPrefix("hone_compute_busy_seconds_total{class=\"serving\"} ") }
            #expect(busy.flatMap { Double($0.split(separator: " ")[1]) } ?? 0 > 0, "serving busy seconds: \(busy ?? "missing")")
            #expect(text.contains("hone_compute_wait_seconds_total{class=\"learning\"} "))
            // The process families an operator watches for leaks: this process holds the model, so
            // hundreds of MB resident, descriptors and threads open, and started before now.
            func value(_ name: String) -> Double? {
                text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
            }
            #expect(value("process_resident_memory_bytes") ?? 0 > 100_000_000)
            #expect(value("process_virtual_memory_bytes") ?? 0 >= value("process_resident_memory_bytes") ?? .infinity)
            #expect(value("process_open_fds") ?? 0 > 3 && value("process_threads") ?? 0 > 1 && value("process_cpu_seconds_total") ?? 0 > 0)
            #expect((value("process_start_time_seconds") ?? .infinity) <= Date().timeIntervalSince1970)
            // The C heap beside them: what the program holds (the tokenizer, the log's queue) and
            // what the allocator keeps free, so an operator can tell a leak from fragmentation.
            #expect(value(#"hone_heap_bytes{state="in_use"}"#) ?? 0 > 1_000_000)
            #expect(value(#"hone_heap_bytes{state="free"}"#) ?? -1 >= 0)
            // What the served adapter costs: one shard of rank 4 on every target of every layer.
            let config = RealModel.model.config
            let factors = LoRATarget.allCases.reduce(0) { sum, target in let (out, inWidth) = target.shape(config); return sum + 4 * (out + inWidth) }
            #expect(value(#"hone_adapter_shards{adapter="swap"}"#) == 1)
            #expect(value(#"hone_adapter_weight_bytes{adapter="swap"}"#) == Double(config.layers * factors * 4))
            let failures = text.split(separator: "\n").first { $0.hasPrefix("hone_completion_log_failures_total ") }
            #expect(failures.flatMap { Int($0.split(separator: " ")[1]) } ?? 0 >= 1)
            // And it keeps serving.
            #expect(try await client.post("/v1/chat/completions", ServerTests.chatBody("Name a color.", maxTokens: 2)).0 == 200)
        }
    }
}
