import Foundation
import Generation
import Llama
import Logging
import Server
import Synchronization
import Tensor
import Tokenizer

/// Serving benchmarks on the real model (`HONE_MODEL`) through real HTTP on 127.0.0.1:
/// `serve` — aggregate completion tokens/s and time-to-first-token percentiles with 1, 4
/// and 16 concurrent streaming clients, each sending requests one after another for 8 s;
/// `swap` — p99 request latency while an adapter is
/// swapped every 100 ms over p99 without swaps, and the time from a swap request to the
/// first token of a response on the new version.
enum ServeBench {
    /// One streamed request as a client saw it (seconds since the run's start).
    struct Sample: Sendable {
        let start: Double, firstToken: Double, end: Double
        let tokens: Int
        let version: String
    }

    /// The requests' sampling temperature (`HONE_BENCH_TEMPERATURE`): 0, greedy, by default;
    /// 1 is the API's default, what a client that sets nothing gets.
    static let temperature = ProcessInfo.processInfo.environment["HONE_BENCH_TEMPERATURE"].flatMap(Double.init) ?? 0
    /// Seconds each client count of `serve` keeps its clients sending.
    static let servePhaseSeconds = 8.0
    /// `serve` through an adapter version (`HONE_BENCH_ADAPTER=1`: rank 16 on all seven
    /// targets, as the learner makes) instead of the base model.
    static let throughAdapter = ProcessInfo.processInfo.environment["HONE_BENCH_ADAPTER"] == "1"

    static func run(_ which: String, logger: Logger) async throws {
        guard let path = ProcessInfo.processInfo.environment["HONE_MODEL"] else {
            throw BenchError(message: "HONE_MODEL is not set (ops/bench sets it)")
        }
        let model = try LlamaModel(path: path)
        let snapshot = ModelSnapshot(model: model, tokenizer: try Tokenizer(gguf: model.file), modelID: "smollm2", version: "base")
        let holder = SnapshotHolder(snapshot)
        let scheduler = BatchScheduler(maxBatch: 16, compute: ComputeScheduler())
        var configuration = ServerConfiguration()
        configuration.port = 0
        let server = HoneServer(configuration: configuration, holder: holder, scheduler: scheduler, logger: logger)
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let app = server.application { portContinuation.yield($0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await scheduler.run() }
            group.addTask { try await app.runService() }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            let port = await iterator.next()!
            if which == "serve" {
                if throughAdapter { try holder.install(adapter(1, "bench@1", model: model)) }
                // Each client sends request after request for `servePhaseSeconds` (the last
                // ones finish after it). With a fixed count a client (2 until session 21, then
                // 8) clients whose answers came out short ran out of requests early, and the
                // window measured the batch draining: 8.3, then 10.8 of 16 requests open on
                // average. `mean_in_flight` tells how many were.
                for clients in [1, 4, 16] {
                    let (samples, seconds) = try await load(port: port, clients: clients, duration: servePhaseSeconds,
                                                            model: throughAdapter ? "smollm2:bench" : "smollm2")
                    let ttft = samples.map { $0.firstToken - $0.start }
                    emit(["bench": "serve", "clients": clients, "adapter": throughAdapter, "requests": samples.count, "max_tokens": 32, "temperature": temperature,
                          "tokens_per_s": Double(samples.reduce(0) { $0 + $1.tokens }) / seconds,
                          "mean_in_flight": samples.reduce(0) { $0 + $1.end - $1.start } / seconds,
                          "ttft_p50_ms": percentile(ttft, 0.5) * 1000, "ttft_p99_ms": percentile(ttft, 0.99) * 1000])
                }
            } else {
                try await swap(port: port, holder: holder, model: model)
            }
        }
    }

    /// A version of adapter "bench": rank 16 on all seven targets, B small and non-zero.
    static func adapter(_ seed: UInt64, _ version: String, model: LlamaModel) -> ServedAdapter {
        var weights = LoRAAdapter.initialized(config: LoRAConfig(), model: model.config, seed: seed)
        var random = SeededRandom(seed: seed &+ 99)
        for key in weights.keys {
            for i in weights.weights[key]!.b.indices { weights.weights[key]!.b[i] = (random.unit() * 2 - 1) * 0.01 }
        }
        return ServedAdapter(name: "bench", version: version, weights: weights, baseModelSHA256: model.file.sha256)
    }

    static func swap(port: Int, holder: SnapshotHolder, model: LlamaModel) async throws {
        let versions = [adapter(1, "bench@1", model: model), adapter(2, "bench@2", model: model)]
        try holder.install(versions[0])
        let clients = 4, seconds = 20.0
        let (quiet, _) = try await load(port: port, clients: clients, duration: seconds, model: "smollm2:bench")
        let stop = Atomic<Bool>(false)
        async let swapping: Int = {
            var n = 0
            while !stop.load(ordering: .relaxed) {
                try? await Task.sleep(for: .milliseconds(100))
                n += 1
                let next = versions[n % 2]
                try? await Parallel.onThread { try holder.install(next) }
            }
            return n
        }()
        let (busy, _) = try await load(port: port, clients: clients, duration: seconds, model: "smollm2:bench")
        stop.store(true, ordering: .relaxed)
        let swaps = await swapping
        // Time from a swap request to the first token of a response on the new version.
        let fresh = adapter(3, "bench@3", model: model)
        let clock = ContinuousClock.now
        async let after = load(port: port, clients: clients, duration: 6, model: "smollm2:bench", origin: clock)
        try await Task.sleep(for: .seconds(2))
        let requested = (ContinuousClock.now - clock) / .seconds(1)
        try await Parallel.onThread { try holder.install(fresh) }
        let (samples, _) = try await after
        let firstOnNew = samples.filter { $0.version == "bench@3" }.map(\.firstToken).min() ?? .nan
        let latency = { (s: [Sample]) in percentile(s.map { $0.end - $0.start }, 0.99) }
        emit(["bench": "swap", "clients": clients, "swaps": swaps, "requests_quiet": quiet.count, "requests_swapping": busy.count,
              "p99_quiet_ms": latency(quiet) * 1000, "p99_swapping_ms": latency(busy) * 1000,
              "p99_ratio": latency(busy) / latency(quiet),
              "swap_to_first_token_ms": (firstOnNew - requested) * 1000])
    }

    /// `clients` threads streaming chat requests: `requests` each, or for `duration` seconds.
    static func load(port: Int, clients: Int, requests: Int = .max, duration: Double = .infinity, model: String,
                     origin: ContinuousClock.Instant = .now) async throws -> ([Sample], Double) {
        let prompts = ["Name a color.", "What is 2 + 2?", "Say hello.", "Name a fruit.", "Describe the sea in one line.",
                       "What is the capital of Italy?", "Count to five.", "Name an animal."]
        let start = ContinuousClock.now
        let samples = try await withThrowingTaskGroup(of: [Sample].self) { group in
            for c in 0..<clients {
                group.addTask {
                    try await Parallel.onThread {
                        var mine: [Sample] = []
                        var i = 0
                        while i < requests && (ContinuousClock.now - start) / .seconds(1) < duration {
                            let prompt = prompts[(c + i * clients) % prompts.count]
                            mine.append(try stream(port: port, model: model, prompt: prompt, origin: origin))
                            i += 1
                        }
                        return mine
                    }
                }
            }
            var all: [Sample] = []
            for try await part in group { all += part }
            return all
        }
        return (samples, (ContinuousClock.now - start) / .seconds(1))
    }

    /// One streaming chat request over a plain socket, timed as the client sees it.
    static func stream(port: Int, model: String, prompt: String, origin: ContinuousClock.Instant) throws -> Sample {
        let body = #"{"model":"\#(model)","messages":[{"role":"user","content":"\#(prompt)"}],"max_tokens":32,"temperature":\#(temperature),"seed":7,"stream":true}"#
        let started = (ContinuousClock.now - origin) / .seconds(1)
        var firstToken: Double?
        let received = try exchange(port: port, body: body) { received in
            if firstToken == nil, received.components(separatedBy: "\"content\":\"").count > 2 {
                firstToken = (ContinuousClock.now - origin) / .seconds(1)
            }
        }
        let end = (ContinuousClock.now - origin) / .seconds(1)
        guard received.contains("data: [DONE]") else { throw BenchError(message: "a stream did not finish: \(received.suffix(300))") }
        let version = received.range(of: "\"system_fingerprint\":\"").map { r in
            String(received[r.upperBound...].prefix { $0 != "\"" })
        } ?? "?"
        let tokens = received.components(separatedBy: "\"delta\":{\"content\":").count - 1
        return Sample(start: started, firstToken: firstToken ?? end, end: end, tokens: tokens, version: version)
    }

    /// A greedy, non-streamed chat answer and the version that gave it.
    static func chat(port: Int, model: String, prompt: String, maxTokens: Int) throws -> (text: String, version: String) {
        let request: [String: Any] = ["model": model, "messages": [["role": "user", "content": prompt]], "max_tokens": maxTokens, "temperature": 0]
        let body = String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self)
        let received = try exchange(port: port, body: body) { _ in }
        guard let start = received.range(of: "\r\n\r\n"),
              let json = try JSONSerialization.jsonObject(with: Data(received[start.upperBound...].utf8)) as? [String: Any],
              let choices = json["choices"] as? [[String: Any]], let message = choices.first?["message"] as? [String: Any],
              let text = message["content"] as? String else {
            throw BenchError(message: "no answer from \(model): \(received.suffix(300))")
        }
        return (text, json["system_fingerprint"] as? String ?? "?")
    }

    /// Sends one POST /v1/chat/completions with `body` over a new connection and returns the
    /// whole response; `progress` sees what has arrived after every read.
    static func exchange(port: Int, body: String, progress: (String) -> Void) throws -> String {
        try exchange(port: port, method: "POST", path: "/v1/chat/completions", body: body, progress: progress)
    }

    /// Status and body of a GET over a new connection.
    static func get(port: Int, path: String, timeoutSeconds: Int = 10) throws -> (status: Int, body: String) {
        let received = try exchange(port: port, method: "GET", path: path, body: "", timeoutSeconds: timeoutSeconds) { _ in }
        let status = received.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        let body = received.range(of: "\r\n\r\n").map { String(received[$0.upperBound...]) } ?? ""
        return (status, body)
    }

    /// The values of /metrics samples whose series (name and labels, as written) begin with
    /// one of `series`, first match each; nil when /metrics is unreachable.
    static func metrics(port: Int, _ series: [String], timeoutSeconds: Int = 5) -> [String: Double]? {
        guard let (status, body) = try? get(port: port, path: "/metrics", timeoutSeconds: timeoutSeconds), status == 200 else { return nil }
        var values: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            for name in series where values[name] == nil && (line.hasPrefix(name + " ") || line.hasPrefix(name + "{")) {
                values[name] = line.split(separator: " ").last.flatMap { Double($0) }
            }
        }
        return values
    }

    /// One HTTP/1.1 request over a new connection; the whole response as text. A read that
    /// waits longer than `timeoutSeconds` (a stopped server) fails the exchange.
    static func exchange(port: Int, method: String, path: String, body: String, timeoutSeconds: Int = 120,
                         progress: (String) -> Void) throws -> String {
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchError(message: "cannot connect to 127.0.0.1:\(port)") }
        _ = request.withCString { write(fd, $0, strlen($0)) }
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            received.append(contentsOf: buffer[0..<n])
            progress(String(decoding: received, as: UTF8.self))
        }
        return String(decoding: received, as: UTF8.self)
    }
}
