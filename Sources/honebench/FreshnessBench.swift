import Foundation
import Logging
import Postgres
import Registry
import Synchronization
import Tensor
import BuiltTools

/// `honebench freshness`: seconds from the INSERT of 8 corrections (one micro-batch) into
/// `hone.feedback` to the first served response from the version that learned them, on a
/// release `honed` (learner on, embedded database) that keeps serving two streaming clients
/// throughout (HONE_BENCH_CLIENTS: how many; 0 times it with no serving load). Each trial
/// (HONE_BENCH_TRIALS, 3 by default) uses an adapter of its own whose warm-up update first
/// makes the anchor answers, as a running daemon has them. The line
/// also carries the update's time breakdown (the median trial's) and what the streaming
/// clients saw with the learner idle and during the updates.
enum FreshnessBench {
    /// The adapter's settings: the defaults, as a user's adapter has them (its learning rate
    /// was this benchmark's own 1e-3 before it became the default).
    static let settings = "{}"

    struct Trial {
        var seconds: Double
        /// Seconds from the INSERT until the version was in the registry (the rest, until
        /// it answered, is the server's fetch and swap).
        var recorded: Double
        var outcome: String
        var version: VersionRecord?
    }

    static func run(logger: Logger) async throws {
        let trials = Int(ProcessInfo.processInfo.environment["HONE_BENCH_TRIALS"] ?? "3") ?? 3
        let clientCount = max(Int(ProcessInfo.processInfo.environment["HONE_BENCH_CLIENTS"] ?? "2") ?? 2, 0)
        let daemon = try BenchDaemon(name: "freshness")
        defer { daemon.stop() }
        let port = daemon.port
        // A one-token answer names the version that gave it. The wait polls it only once the
        // database has the version: a poll that generated, every 100 ms, was itself a client
        // streaming all the time (each poll was a 32-token stream before).
        func version(_ model: String) -> String? {
            try? ServeBench.chat(port: port, model: model, prompt: "Hi", maxTokens: 1).version
        }
        for _ in 0..<600 where version("smollm2") == nil { try await Task.sleep(for: .milliseconds(100)) }
        let pool = PostgresPool(conninfo: daemon.databaseURL, size: 2, logger: logger)
        let registry = Registry(pool: pool)

        // The clients with the learner idle, for comparison.
        let idle = ServingLoad()
        if clientCount > 0 {
            let idleClients = Task { await idle.run(port: port, clients: clientCount) }
            try await Task.sleep(for: .seconds(15))
            idle.stop.store(true, ordering: .relaxed)
            await idleClients.value
        }

        let facts = try Facts.load().prefix(8)
        let busy = ServingLoad()
        var results: [Trial] = []
        for trial in 1...max(trials, 1) {
            let adapter = "fresh\(trial)"
            try await pool.query("SELECT hone.create_adapter(\(adapter), \(settings)::jsonb, 'freshness benchmark')")
            try await pool.query("INSERT INTO hone.feedback (adapter, prompt, response, rating) VALUES (\(adapter), 'Say hi.', 'Hi!', 1)")
            for _ in 0..<3000 where try await registry.adapter(adapter)?.activeVersion == nil { try await Task.sleep(for: .milliseconds(100)) }
            guard try await registry.adapter(adapter)?.activeVersion == 1 else { throw BenchError(message: "\(adapter)'s warm-up update was not accepted") }
            for _ in 0..<600 where version("smollm2:\(adapter)") != "\(adapter)@v1" { try await Task.sleep(for: .milliseconds(100)) }

            busy.stop.store(false, ordering: .relaxed)
            let clients = Task { await busy.run(port: port, clients: clientCount) }
            let inserted = ContinuousClock.now
            // One statement: the eight jobs become visible together, as one micro-batch.
            try await pool.query("""
                INSERT INTO hone.feedback (adapter, prompt, correction)
                SELECT \(adapter), q, c FROM unnest(\(facts.map(\.question))::text[], \(facts.map(\.correction))::text[]) AS t(q, c)
                """)
            var servedAt: ContinuousClock.Instant?, recordedAt: ContinuousClock.Instant?
            var outcome = "accepted"
            while ContinuousClock.now - inserted < .seconds(900) {
                if let latest = try await registry.versions(of: adapter).first, latest.version > 1 {
                    recordedAt = recordedAt ?? .now
                    guard latest.status != "rejected" else {
                        outcome = "rejected: \(latest.reason ?? "")"
                        break
                    }
                    if version("smollm2:\(adapter)") == "\(adapter)@v\(latest.version)" { servedAt = .now; break }
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            busy.stop.store(true, ordering: .relaxed)
            await clients.value
            results.append(Trial(seconds: servedAt.map { ($0 - inserted) / .seconds(1) } ?? .nan,
                                 recorded: recordedAt.map { ($0 - inserted) / .seconds(1) } ?? .nan, outcome: outcome,
                                 version: try await registry.versions(of: adapter).first))
        }
        let seconds = results.map(\.seconds)
        let median = results.sorted { $0.seconds < $1.seconds }[results.count / 2]
        func metric(_ key: String) -> Double { median.version?.metrics[key]?.doubleValue ?? .nan }
        let load = busy.counts.withLock { $0 }
        emit(["bench": "freshness", "corrections": facts.count, "clients": clientCount, "trials": results.count,
              "median_s": percentile(seconds, 0.5), "max_s": seconds.max() ?? .nan, "seconds": seconds.map { ($0 * 10).rounded() / 10 },
              "outcomes": results.map(\.outcome).joined(separator: "; "), "steps": median.version?.metrics["steps"]?.intValue ?? 0,
              "recorded_s": median.recorded, "update_s": metric("seconds"), "examples_s": metric("seconds_examples"), "training_s": metric("seconds_training"),
              "checks_s": metric("seconds_checks"), "gate_s": metric("seconds_gate"),
              "gate_checks_s": metric("seconds_gate_checks"), "gate_locality_s": metric("seconds_gate_locality"),
              "gate_drift_s": metric("seconds_gate_drift"),
              "serving_ok": load.ok, "serving_failed": load.failed,
              "idle_tokens_per_s_p50": idle.tokensPerSecond(0.5), "idle_ttft_p50_s": idle.ttft(0.5),
              "learning_tokens_per_s_p50": busy.tokensPerSecond(0.5), "learning_ttft_p50_s": busy.ttft(0.5),
              "learning_ttft_p99_s": busy.ttft(0.99),
              "learning_over_idle_tokens_per_s": busy.tokensPerSecond(0.5) / idle.tokensPerSecond(0.5),
              // The learner starts the daemon's peak afresh at each update (its own `rss_peak_mb`),
              // so the run's peak is the larger of what is left and every update's.
              "honed_peak_rss_mb": ([daemon.peakRSSMegabytes ?? .nan] + results.map { $0.version?.metrics["rss_peak_mb"]?.doubleValue ?? .nan }).filter { !$0.isNaN }.max() ?? .nan,
              "update_peak_rss_mb": metric("rss_peak_mb"),
              "settings": "adapter defaults"])
        await pool.close()
    }
}

/// A release `honed` (learner on, embedded database) in a temporary data directory: the
/// benchmarks that time the daemon run it as a user does.
struct BenchDaemon {
    let port: Int
    let directory: String
    let pid: pid_t
    var databaseURL: String { "postgresql://postgres@/hone?host=\(directory)/pg" }

    init(name: String) throws {
        guard let honed = BuiltTool("honed", configuration: "release") else { throw BenchError(message: "build honed -c release first (ops/bench does)") }
        directory = NSTemporaryDirectory() + "hone-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = 30000 + Int(getpid() % 10000)
        // HONE_BENCH_LEARNING_SHARE: the daemon's --learning-share (its default otherwise).
        let share = ProcessInfo.processInfo.environment["HONE_BENCH_LEARNING_SHARE"].map { ["--learning-share", $0] } ?? []
        pid = try honed.spawn(["--port", "\(port)", "--data-dir", directory, "--log-level", "warning"] + share,
                              stdout: directory + "/honed.log", stderr: directory + "/honed.err")
    }

    /// The daemon's peak resident memory so far (VmHWM), in MB.
    var peakRSSMegabytes: Double? {
        let kB = statusField("VmHWM:")
        return kB > 0 ? (kB / 1024).rounded() : nil
    }

    /// SIGTERM, wait for the exit, remove the data directory.
    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Streaming clients on the base model; `run` returns once `stop` is set.
final class ServingLoad: Sendable {
    let stop = Atomic<Bool>(false)
    let counts = Mutex<(ok: Int, failed: Int)>((0, 0))
    /// Finished streams (times from `origin`).
    let samples = Mutex<[ServeBench.Sample]>([])
    let origin = ContinuousClock.now

    func run(port: Int, clients: Int) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<clients {
                group.addTask { [self] in
                    _ = try? await Parallel.onThread { [self] in
                        while !stop.load(ordering: .relaxed) {
                            let sample = try? ServeBench.stream(port: port, model: "smollm2", prompt: "Name a fruit.", origin: origin)
                            counts.withLock { if sample != nil { $0.ok += 1 } else { $0.failed += 1 } }
                            if let sample { samples.withLock { $0.append(sample) } }
                        }
                    }
                }
            }
        }
    }

    /// Percentile `p` of the streams' times to first token.
    func ttft(_ p: Double) -> Double { percentile(samples.withLock { $0 }.map { $0.firstToken - $0.start }, p) }

    /// Percentile `p` of the streams' tokens per second after their first token.
    func tokensPerSecond(_ p: Double) -> Double {
        percentile(samples.withLock { $0 }.filter { $0.tokens > 1 && $0.end > $0.firstToken }
            .map { Double($0.tokens - 1) / ($0.end - $0.firstToken) }, p)
    }
}
