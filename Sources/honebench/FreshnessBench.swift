import Foundation
import Logging
import Postgres
import Registry
import Synchronization
import Tensor
import TestSupport

/// `honebench freshness`: seconds from the INSERT of 8 corrections (one micro-batch) into
/// `hone.feedback` to the first served response from the version that learned them, on a
/// release `honed` (learner on, embedded database) that keeps serving two streaming clients
/// throughout. A warm-up update first makes the anchor answers, as a running daemon has them.
enum FreshnessBench {
    /// The gate's drift limits are relaxed for this benchmark (recorded in its output): it
    /// measures how fast a learned version serves, not whether eight facts pass the default gate.
    static let settings = #"{"lr": 0.001, "max_steps": 30, "max_nll_rise": 1.0, "max_kl": 2.0}"#

    static func run(logger: Logger) async throws {
        guard let honed = BuiltTool("honed", configuration: "release") else { throw BenchError(message: "build honed -c release first (ops/bench does)") }
        let dir = NSTemporaryDirectory() + "hone-freshness-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = 30000 + Int(getpid() % 10000)
        let pid = try honed.spawn(["--port", "\(port)", "--data-dir", dir, "--log-level", "warning"],
                                  stdout: dir + "/honed.log", stderr: dir + "/honed.err")
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        let origin = ContinuousClock.now
        func version(_ model: String) -> String? {
            try? ServeBench.stream(port: port, model: model, prompt: "Hi", origin: origin).version
        }
        for _ in 0..<600 where version("smollm2") == nil { try await Task.sleep(for: .milliseconds(100)) }
        let pool = PostgresPool(conninfo: "postgresql://postgres@/hone?host=\(dir)/pg", size: 2, logger: logger)
        let registry = Registry(pool: pool)
        try await pool.query("SELECT hone.create_adapter('fresh', \(settings)::jsonb, 'freshness benchmark')")
        try await pool.query("INSERT INTO hone.feedback (adapter, prompt, response, rating) VALUES ('fresh', 'Say hi.', 'Hi!', 1)")
        for _ in 0..<3000 where try await registry.adapter("fresh")?.activeVersion == nil { try await Task.sleep(for: .milliseconds(100)) }
        guard try await registry.adapter("fresh")?.activeVersion == 1 else { throw BenchError(message: "the warm-up update was not accepted") }

        let serving = ServingLoad()
        let clients = Task { await serving.run(port: port, clients: 2) }
        let facts = try Facts.load().prefix(8)
        let inserted = ContinuousClock.now
        // One statement: the eight jobs become visible together, as one micro-batch.
        try await pool.query("""
            INSERT INTO hone.feedback (adapter, prompt, correction)
            SELECT 'fresh', q, c FROM unnest(\(facts.map(\.question))::text[], \(facts.map(\.correction))::text[]) AS t(q, c)
            """)
        var servedAt: ContinuousClock.Instant?
        var outcome = "accepted"
        while servedAt == nil && ContinuousClock.now - inserted < .seconds(900) {
            if let v = version("smollm2:fresh"), v != "fresh@v1" { servedAt = .now; break }
            if let latest = try await registry.versions(of: "fresh").first, latest.version > 1, latest.status == "rejected" {
                outcome = "rejected: \(latest.reason ?? "")"
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        serving.stop.store(true, ordering: .relaxed)
        await clients.value
        let seconds = servedAt.map { ($0 - inserted) / .seconds(1) } ?? .nan
        let load = serving.counts.withLock { $0 }
        let update = try await registry.versions(of: "fresh").first
        emit(["bench": "freshness", "corrections": facts.count, "median_s": seconds, "max_s": seconds, "outcome": outcome,
              "version": update?.id ?? "-", "steps": update?.metrics["steps"]?.intValue ?? 0,
              "update_s": update?.metrics["seconds"]?.doubleValue ?? .nan,
              "examples_s": update?.metrics["seconds_examples"]?.doubleValue ?? .nan,
              "training_s": update?.metrics["seconds_training"]?.doubleValue ?? .nan,
              "checks_s": update?.metrics["seconds_checks"]?.doubleValue ?? .nan,
              "gate_s": update?.metrics["seconds_gate"]?.doubleValue ?? .nan,
              "serving_ok": load.ok, "serving_failed": load.failed, "settings": "lr 1e-3, ≤30 steps, drift limits relaxed to 1.0 bits NLL / 2.0 bits KL"])
        await pool.close()
    }
}

/// Streaming clients on the base model while the learner works.
final class ServingLoad: Sendable {
    let stop = Atomic<Bool>(false)
    let counts = Mutex<(ok: Int, failed: Int)>((0, 0))

    func run(port: Int, clients: Int) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<clients {
                group.addTask { [self] in
                    _ = try? await Parallel.onThread { [self] in
                        while !stop.load(ordering: .relaxed) {
                            let ok = (try? ServeBench.stream(port: port, model: "smollm2", prompt: "Name a fruit.", origin: .now)) != nil
                            counts.withLock { if ok { $0.ok += 1 } else { $0.failed += 1 } }
                        }
                    }
                }
            }
        }
    }
}
