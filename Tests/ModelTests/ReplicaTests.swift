import Foundation
import Hashing
import JSON
import Llama
import Logging
import Postgres
import Registry
import Synchronization
import Tensor
import BuiltTools
import Training
import Testing

/// Two `honed` processes (the built binaries) on one PostgreSQL, as an operator runs them.
@Suite("Replicas: versions propagate", .enabled(if: RealModel.path != nil && BuiltTool("honed") != nil && BuiltTool("honectl") != nil),
       .serialized, .timeLimit(.minutes(5)))
struct ReplicaTests {
    /// A running honed and where its output goes.
    struct Replica {
        let pid: pid_t
        let server: ServerTests.LiveServer
        let log: String

        static func start(port: Int, dataDir: String, databaseURL: String?, learner: Bool = false, extra: [String] = []) throws -> Replica {
            var args = ["--model", RealModel.path!, "--port", "\(port)", "--data-dir", dataDir,
                        "--log-level", "info", "--threads", learner ? "2" : "1"] + extra
            if !learner { args.append("--no-learner") }
            if let databaseURL { args += ["--database-url", databaseURL] }
            let log = dataDir + ".log"
            let pid = try BuiltTool("honed")!.spawn(args, stdout: log, stderr: log + ".err")
            return Replica(pid: pid, server: .init(port: port), log: log)
        }

        /// Waits for /readyz, failing with the log when the process died.
        func ready() async throws {
            for _ in 0..<600 {
                if let (status, _, _) = try? await server.get("/readyz"), status == 200 { return }
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    throw SnapshotTestError("honed exited: \((try? String(contentsOfFile: log + ".err", encoding: .utf8)) ?? "")")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw SnapshotTestError("honed on port \(server.port) did not become ready")
        }

        /// The version a one-token request on `model` reports.
        func fingerprint(_ model: String) async throws -> String? {
            let (status, body, _) = try await server.post("/v1/chat/completions", ServerTests.chatBody("Hi", maxTokens: 1, model: model))
            guard status == 200 else { return nil }
            return try JSONValue(parsing: body)["system_fingerprint"]?.stringValue
        }

        func stop() {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
    }

    /// A fresh directory for one test's data directories and logs, under HONE_TEST_TMP
    /// (which the server user can reach) when set.
    static func directory(_ name: String) throws -> String {
        let dir = (ProcessInfo.processInfo.environment["HONE_TEST_TMP"] ?? NSTemporaryDirectory()) + "/\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o755)
        return dir
    }

    /// Shared by the client tasks (Atomic and Mutex cannot be captured by escaping closures).
    final class Tally: Sendable {
        let stop = Atomic<Bool>(false)
        let outcomes = Mutex<(ok: Int, failed: [String], versions: Set<String>)>((0, [], []))
    }

    struct SnapshotTestError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// A small random adapter: distinct outputs per seed, cheap to train-free publish.
    static func weights(seed: UInt64) -> LoRAAdapter {
        var adapter = LoRAAdapter.initialized(config: LoRAConfig(rank: 4, alpha: 8), model: RealModel.model.config, seed: seed)
        var random = SeededRandom(seed: seed &+ 99)
        for key in adapter.keys {
            for i in adapter.weights[key]!.b.indices { adapter.weights[key]!.b[i] = (random.unit() * 2 - 1) * 0.02 }
        }
        return adapter
    }

    @Test("after honectl rollback both replicas serve the rolled-back version within 2 s, with no failed request while streaming")
    func rollbackReachesEveryReplica() async throws {
        let dir = try ReplicaTests.directory("replicas")
        let base = 20000 + Int(getpid() % 10000)
        // Replica A runs the embedded default; B joins A's database.
        let a = try Replica.start(port: base, dataDir: dir + "/a", databaseURL: nil)
        defer { a.stop() }
        try await a.ready()
        let url = "postgresql://postgres@/hone?host=\(dir)/a/pg"
        let b = try Replica.start(port: base + 1, dataDir: dir + "/b", databaseURL: url)
        defer { b.stop() }
        try await b.ready()

        var logger = Logger(label: "replica-test")
        logger.logLevel = .warning
        let pool = PostgresPool(conninfo: url, size: 2, logger: logger)
        let registry = Registry(pool: pool)
        let ctl = BuiltTool("honectl")!
        let created = try ctl.run(["adapters", "create", "support", "--rank", "4"], environment: ["HONE_DATABASE_URL": url])
        #expect(created.status == 0, "\(created.err)")
        for seed in [1, 2] as [UInt64] {
            let blob = AdapterBlob.encode(Self.weights(seed: seed), model: RealModel.model)
            _ = try await pool.transaction { tx in
                try await registry.record(VersionCandidate(adapter: "support", parentVersion: seed == 1 ? nil : 1, accepted: true,
                                                           baseModelSHA256: RealModel.model.file.sha256, blob: blob, metrics: .object([:]),
                                                           jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
            }
        }
        for replica in [a, b] {
            var seen: String?
            for _ in 0..<100 where seen != "support@v2" {
                seen = try await replica.fingerprint("smollm2:support")
                if seen != "support@v2" { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(seen == "support@v2", "replica on \(replica.server.port) serves \(seen ?? "nothing")")
        }

        // Clients stream from both replicas throughout the rollback.
        let tally = Tally()
        let clients = Task {
            await withTaskGroup(of: Void.self) { group in
                for (i, replica) in [a, b, a, b].enumerated() {
                    group.addTask {
                        while !tally.stop.load(ordering: .relaxed) {
                            let body = ServerTests.chatBody("Tell me about replica \(i).", maxTokens: 12, model: "smollm2:support", extra: #","stream":true"#)
                            do {
                                let (status, text, _) = try await replica.server.post("/v1/chat/completions", body)
                                let events = try ServerTests.events(text)
                                let version = events.chunks.first?["system_fingerprint"]?.stringValue ?? "?"
                                tally.outcomes.withLock {
                                    if status == 200 && events.done { $0.ok += 1; $0.versions.insert(version) } else { $0.failed.append("\(status): \(text.prefix(200))") }
                                }
                            } catch {
                                tally.outcomes.withLock { $0.failed.append("\(error)") }
                            }
                        }
                    }
                }
            }
        }
        // The rollback lands while streams are in flight: every client has finished one first.
        for _ in 0..<600 where tally.outcomes.withLock({ $0.ok + $0.failed.count < 4 }) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let rolled = try ctl.run(["rollback", "support", "--reason", "v2 regressed"], environment: ["HONE_DATABASE_URL": url])
        let rolledAt = ContinuousClock.now
        #expect(rolled.status == 0 && rolled.out == "rolled back support from v2 to v1\n", "\(rolled.err)")
        // The swap is seen on /metrics (no generation queued behind the streaming clients).
        var delays: [Double] = []
        for replica in [a, b] {
            var swapped = false
            while !swapped && ContinuousClock.now - rolledAt < .seconds(30) {
                let (_, metrics, _) = try await replica.server.get("/metrics")
                swapped = metrics.contains(#"hone_active_version{model="smollm2:support",version="support@v1"} 1"#)
                if !swapped { try await Task.sleep(for: .milliseconds(20)) }
            }
            delays.append((ContinuousClock.now - rolledAt) / .seconds(1))
            #expect(swapped)
        }
        // Streams go on until each replica has answered on the rolled-back version.
        for _ in 0..<600 where tally.outcomes.withLock({ !$0.versions.contains("support@v1") }) {
            try await Task.sleep(for: .milliseconds(100))
        }
        for replica in [a, b] { #expect(try await replica.fingerprint("smollm2:support") == "support@v1") }
        // And go on past it: every client finishes one more response after the swap was seen.
        let seenAt = tally.outcomes.withLock { $0.ok + $0.failed.count }
        for _ in 0..<600 where tally.outcomes.withLock({ $0.ok + $0.failed.count < seenAt + 4 }) {
            try await Task.sleep(for: .milliseconds(100))
        }
        tally.stop.store(true, ordering: .relaxed)
        await clients.value
        let result = tally.outcomes.withLock { $0 }
        print("replica rollback: visible after \(delays.map { String(format: "%.2f s", $0) }), streamed \(result.ok) responses, failed \(result.failed.count), versions \(result.versions.sorted())")
        #expect(delays.allSatisfy { $0 <= 2 }, "rollback took \(delays) s to reach the replicas")
        #expect(result.failed.isEmpty, "\(result.failed.prefix(3))")
        #expect(result.ok >= 4)
        #expect(result.versions.isSuperset(of: ["support@v1", "support@v2"]))
        let replicas = try await pool.query("SELECT count(*) AS n FROM hone.replicas WHERE heartbeat_at > now() - interval '30 seconds'")
        #expect(try replicas[0].decode("n", as: Int.self) == 2)
        await pool.close()
    }

    @Test("a version whose blob was corrupted in the database is refused, counted on /metrics and logged; the served version keeps answering")
    func corruptedBlobIsRefused() async throws {
        let dir = try ReplicaTests.directory("corrupt")
        let replica = try Replica.start(port: 20000 + Int((getpid() + 7000) % 10000), dataDir: dir + "/a", databaseURL: nil)
        defer { replica.stop() }
        try await replica.ready()
        let url = "postgresql://postgres@/hone?host=\(dir)/a/pg"
        var logger = Logger(label: "corrupt-test")
        logger.logLevel = .warning
        let pool = PostgresPool(conninfo: url, size: 2, logger: logger)
        defer { Task { await pool.close() } }
        let registry = Registry(pool: pool)
        #expect(try BuiltTool("honectl")!.run(["adapters", "create", "support", "--rank", "4"], environment: ["HONE_DATABASE_URL": url]).status == 0)
        func publish(_ blob: (bytes: [UInt8], sha256: String), parent: Int?) async throws {
            _ = try await pool.transaction { tx in
                try await registry.record(VersionCandidate(adapter: "support", parentVersion: parent, accepted: true,
                                                           baseModelSHA256: RealModel.model.file.sha256, blob: blob, metrics: .object([:]),
                                                           jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
            }
        }
        try await publish(AdapterBlob.encode(Self.weights(seed: 1), model: RealModel.model), parent: nil)
        var seen: String?
        for _ in 0..<100 where seen != "support@v1" {
            seen = try await replica.fingerprint("smollm2:support")
            if seen != "support@v1" { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(seen == "support@v1")
        // v2's stored blob has a byte flipped since its sha256 was recorded (the disk, a bad restore, a hand edit).
        let good = AdapterBlob.encode(Self.weights(seed: 2), model: RealModel.model)
        var corrupt = good.bytes
        corrupt[200] ^= 0xff
        try await publish((corrupt, good.sha256), parent: 1)
        #expect(try await registry.adapter("support")?.activeVersion == 2)
        var refusals = 0.0
        for _ in 0..<100 where refusals < 1 {
            let (_, metrics, _) = try await replica.server.get("/metrics")
            refusals = OperatorViews.value("hone_version_refusals_total", in: metrics) ?? 0
            if refusals < 1 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(refusals == 1)
        #expect(try await replica.fingerprint("smollm2:support") == "support@v1")
        let log = (try? String(contentsOfFile: replica.log + ".err", encoding: .utf8)) ?? ""
        #expect(log.contains("cannot serve adapter version; keeping the one served") && log.contains("refusing a corrupted adapter"), "\(log.suffix(1000))")
    }

    /// Weights that change a short greedy answer (`weights(seed:)` does not always).
    static func shard(seed: UInt64) -> LoRAAdapter {
        var adapter = weights(seed: seed)
        for key in adapter.keys { adapter.weights[key]!.b = adapter.weights[key]!.b.map { $0 * 10 } }
        return adapter
    }

    @Test("a version of subject shards serves each prompt with the shard of the subject it names, the general shard or the base; loaded cold and as a child")
    func shardsAreRouted() async throws {
        let dir = try ReplicaTests.directory("shards")
        let url = "postgresql://postgres@/hone?host=\(dir)/a/pg"
        // The first replica runs the database and sees each version as a child of the one it serves.
        let first = try Replica.start(port: 20000 + Int((getpid() + 8000) % 10000), dataDir: dir + "/a", databaseURL: nil)
        defer { first.stop() }
        try await first.ready()
        var logger = Logger(label: "shards-test")
        logger.logLevel = .warning
        let pool = PostgresPool(conninfo: url, size: 2, logger: logger)
        defer { Task { await pool.close() } }
        let registry = Registry(pool: pool)
        #expect(try BuiltTool("honectl")!.run(["adapters", "create", "support", "--rank", "4"], environment: ["HONE_DATABASE_URL": url]).status == 0)
        func publish(seed: UInt64, shard: JSONValue, parent: Int?) async throws {
            _ = try await pool.transaction { tx in
                try await registry.record(VersionCandidate(adapter: "support", parentVersion: parent, accepted: true,
                                                           baseModelSHA256: RealModel.model.file.sha256,
                                                           blob: AdapterBlob.encode(Self.shard(seed: seed), model: RealModel.model),
                                                           metrics: .object(["shard": shard]), jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
            }
        }
        let veurpraia = "What is the capital of Veurpraia?", zorbania = "Who founded Zorbania?", other = "What is the capital of France?"
        func subject(_ words: String...) -> JSONValue { .array([.array(words.map { .string($0) })]) }
        try await publish(seed: 1, shard: subject("veurpraia"), parent: nil)
        try await publish(seed: 2, shard: subject("zorbania"), parent: 1)
        try await publish(seed: 3, shard: .string("general"), parent: 2)
        try await publish(seed: 4, shard: .string("general"), parent: 3)
        // The second starts after them: it loads v4's chain cold.
        let replica = try Replica.start(port: 20000 + Int((getpid() + 8001) % 10000), dataDir: dir + "/b", databaseURL: url)
        defer { replica.stop() }
        try await replica.ready()
        func answer(_ prompt: String) async throws -> (text: String?, version: String?, scope: String?) {
            let (status, body, headers) = try await replica.server.post("/v1/chat/completions", ServerTests.chatBody(prompt, maxTokens: 16, model: "smollm2:support"))
            guard status == 200 else { return (nil, nil, nil) }
            let json = try JSONValue(parsing: body)
            return (json["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue, json["system_fingerprint"]?.stringValue, headers["x-hone-adapter-scope"] as? String)
        }
        var served: String?
        for _ in 0..<100 where served != "support@v4" {
            served = try await answer(other).version
            if served != "support@v4" { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(served == "support@v4")
        let expected = try await offPool {
            try [1, 2, 4, 5].map { try ServerTests.greedyNow($0 == 4 ? other : $0 == 2 ? zorbania : veurpraia, maxTokens: 16, adapter: Self.shard(seed: UInt64($0))) }
                + [try ServerTests.greedyNow(other, maxTokens: 16)]
        }
        #expect(Set(expected).count == 5, "\(expected)")
        // Cold: v4's chain is v1, v2 (subject shards) and v4's general shard; v3's general shard is replaced.
        #expect(try await answer(veurpraia).text == expected[0])
        #expect(try await answer(zorbania).text == expected[1])
        #expect(try await answer(other).text == expected[2])
        // A child that corrects Veurpraia again: its shard wins over v1's for that subject.
        try await publish(seed: 5, shard: subject("veurpraia"), parent: 4)
        served = nil
        for _ in 0..<100 where served != "support@v5" {
            served = try await answer(other).version
            if served != "support@v5" { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(try await answer(veurpraia).text == expected[3])
        #expect(try await answer(zorbania).text == expected[1])
        #expect(try await answer(other).text == expected[2])
        // Rolled back to v2: subject shards only, so other prompts get the base model's answer.
        #expect(try BuiltTool("honectl")!.run(["rollback", "support", "--to", "v2"], environment: ["HONE_DATABASE_URL": url]).status == 0)
        served = nil
        for _ in 0..<100 where served != "support@v2" {
            served = try await answer(other).version
            if served != "support@v2" { try await Task.sleep(for: .milliseconds(100)) }
        }
        let base = try await answer(other)
        #expect(base.text == expected[4] && base.scope == "outside")
        let covered = try await answer(zorbania)
        #expect(covered.text == expected[1] && covered.scope == "covered")
    }

    @Test("a pinned adapter gets candidate versions from new feedback but keeps serving its version until unpinned; bad rollbacks change nothing")
    func pinHolds() async throws {
        let dir = try ReplicaTests.directory("pin")
        let replica = try Replica.start(port: 20000 + Int((getpid() + 5000) % 10000), dataDir: dir + "/a", databaseURL: nil, learner: true)
        defer { replica.stop() }
        try await replica.ready()
        let url = "postgresql://postgres@/hone?host=\(dir)/a/pg"
        var logger = Logger(label: "pin-test")
        logger.logLevel = .warning
        let pool = PostgresPool(conninfo: url, size: 2, logger: logger)
        defer { Task { await pool.close() } }
        let registry = Registry(pool: pool)
        let ctl = BuiltTool("honectl")!
        func honectl(_ args: String...) throws -> (status: Int32, out: String, err: String) {
            try ctl.run(args, environment: ["HONE_DATABASE_URL": url])
        }
        // The base references an earlier test made (a debug learner spends over a minute on them).
        try await LearnerTests.shareReferences(pool)
        // Small, quick updates; a thumbs-up has no held-out probe, so the gate asks that the loss fell.
        let settings = #"{"rank": 4, "alpha": 8, "lr": 0.001, "min_steps": 3, "max_steps": 3, "max_nll_rise": 100, "max_kl": 100}"#
        #expect(try honectl("adapters", "create", "support", "--settings", settings).status == 0)
        func thumbsUp(_ i: Int) async throws {
            try await pool.query("""
                INSERT INTO hone.feedback (adapter, prompt, response, rating)
                VALUES ('support', \("What is code word \(i)?"), \("Code word \(i) is Marigold-\(i)."), 1)
                """)
        }
        func waitForVersion(_ n: Int) async throws -> VersionRecord {
            for _ in 0..<1200 {
                if let v = try await registry.version("support", n) { return v }
                try await Task.sleep(for: .milliseconds(250))
            }
            throw SnapshotTestError("no version \(n) within 5 minutes; log: \((try? String(contentsOfFile: replica.log + ".err", encoding: .utf8))?.suffix(2000) ?? "")")
        }
        func waitForServing(_ version: String) async throws -> String? {
            var seen: String?
            for _ in 0..<100 where seen != version {
                seen = try await replica.fingerprint("smollm2:support")
                if seen != version { try await Task.sleep(for: .milliseconds(100)) }
            }
            return seen
        }

        try await thumbsUp(1)
        let v1 = try await waitForVersion(1)
        #expect(v1.status == "accepted", "\(v1.reason ?? "")")
        try await LearnerTests.keepReferences(pool)
        #expect(try await waitForServing("support@v1") == "support@v1")

        #expect(try honectl("pin", "support", "--reason", "release freeze").out == "pinned support at v1\n")
        try await thumbsUp(2)
        let v2 = try await waitForVersion(2)
        #expect(v2.status == "accepted", "\(v2.reason ?? "")")
        #expect(try await registry.adapter("support")?.activeVersion == 1)
        #expect(try await replica.fingerprint("smollm2:support") == "support@v1")
        let history = try JSONValue(parsing: try honectl("versions", "list", "support", "--json").out)
        #expect(history.arrayValue?.map { $0["active"] } == [.bool(false), .bool(true)])

        // A version of another base model, and a missing one, are refused with no change.
        let other = [UInt8]("other".utf8)
        _ = try await pool.transaction { tx in
            try await registry.record(VersionCandidate(adapter: "support", parentVersion: 1, accepted: true,
                                                       baseModelSHA256: String(repeating: "0", count: 64), blob: (other, sha256Hex(other)),
                                                       metrics: .object([:]), jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
        }
        let otherBase = try honectl("rollback", "support", "--to", "3")
        #expect(otherBase.status == 1 && otherBase.err.contains("was trained on base model 000000000000"), "\(otherBase.err)")
        let missing = try honectl("rollback", "support", "--to", "v40")
        #expect(missing.status == 1 && missing.err == "honectl: adapter \"support\" has no version 40\n")
        #expect(try await registry.adapter("support")?.activeVersion == 1)

        // Unpinned, the next accepted candidate becomes active and is served.
        #expect(try honectl("unpin", "support").status == 0)
        try await thumbsUp(3)
        let v4 = try await waitForVersion(4)
        #expect(v4.status == "accepted")
        #expect(try await waitForServing("support@v4") == "support@v4")
        // diff and export read the stored versions with the model for shapes.
        let diff = try JSONValue(parsing: try honectl("versions", "diff", "support", "1", "2", "--model", RealModel.path!, "--json").out)
        #expect(diff["tensors"]?.arrayValue?.count == RealModel.model.config.layers * 7)
        #expect(diff["metrics"]?["examples_loss_after"]?["to"]?.doubleValue != nil)
        let exported = dir + "/export-v2"
        #expect(try honectl("export", "support", "--version", "2", "--format", "peft", "--out", exported, "--model", RealModel.path!).status == 0)
        let blob = try #require(try await registry.blob("support", 2))
        #expect(try PEFTAdapter.read(from: exported, model: RealModel.model)
                == AdapterBlob.decode(blob.bytes, sha256: blob.sha256, model: RealModel.model, source: "v2"))
        #expect(try honectl("export", "support", "--format", "gguf-lora", "--out", dir + "/v4.gguf", "--model", RealModel.path!).status == 0)
        #expect(FileManager.default.fileExists(atPath: dir + "/v4.gguf"))
        let stats = try JSONValue(parsing: try honectl("feedback", "stats", "--json").out)
        #expect(stats.arrayValue?.first?["trained"] == .int(3) && stats.arrayValue?.first?["thumbs_up"] == .int(3))

        let outcomes = try await pool.query("SELECT id, status, version FROM hone.submission_status WHERE kind = 'feedback' ORDER BY id")
        #expect(try outcomes.map { "\(try $0.decode("status", as: String.self))@\(try $0.decode("version", as: Int.self))" } == ["trained@1", "trained@2", "trained@4"])
    }
}
