import Foundation
import Generation
import JSON
import Llama
import Logging
import Postgres
import Queue
import Learning
import Registry
import Synchronization
import Tensor
import BuiltTools
import Testing
import Training

/// The learner inside real `honed` processes on the real model and a real PostgreSQL.
@Suite("Learner: poisoned batches, skills, facts", .enabled(if: RealModel.path != nil && BuiltTool("honed") != nil && BuiltTool("honectl") != nil),
       .serialized, .timeLimit(.minutes(15)))
// 15 minutes per test: the facts test took ~5 minutes on Sapphire Rapids and passed 10 on
// AVX2-only EPYC machines (~1.5× slower training) while a build ran beside it.
struct LearnerTests {
    typealias Replica = ReplicaTests.Replica

    /// A serving replica that owns the embedded database (no learner), and its URL.
    static func database(_ name: String, port: Int) async throws -> (Replica, String, String) {
        let dir = try ReplicaTests.directory(name)
        let holder = try Replica.start(port: port, dataDir: dir + "/db", databaseURL: nil)
        try await holder.ready()
        let url = "postgresql://postgres@/hone?host=\(dir)/db/pg"
        let pool = Self.pool(url)
        try await Self.shareReferences(pool)
        await pool.close()
        return (holder, url, dir)
    }

    /// Gives this database the references an earlier test kept, before any learner starts.
    static func shareReferences(_ pool: PostgresPool) async throws {
        try await Registry(pool: pool).importReferences(fromFile: referencesFile)
    }

    /// The base model's anchor and locality answers and their distilled targets, as the
    /// first learner stored them: each later test's database (and `ops/chaos`'s) starts with
    /// them, as a daemon's does after its first update (making them costs a debug learner
    /// two to four minutes).
    static var referencesFile: String { BuiltTool.referencesFile(modelSHA256: RealModel.model.file.sha256) }

    /// Keeps what the learner stored in this database for the later tests, once per machine.
    static func keepReferences(_ pool: PostgresPool) async throws {
        try await Registry(pool: pool).keepReferences(baseModelSHA256: RealModel.model.file.sha256, atFile: referencesFile) {
            $0["targets"]?.arrayValue?.count == 2 && $0["answers"]?.arrayValue?.count == AnchorSet.prompts.count + LocalitySet.prompts.count
        }
    }

    static func pool(_ url: String) -> PostgresPool {
        var logger = Logger(label: "learner-test")
        logger.logLevel = .warning
        return PostgresPool(conninfo: url, size: 2, logger: logger)
    }

    static func waitUntil(_ what: String, timeout: Duration = .seconds(300), _ done: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await done() { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw ReplicaTests.SnapshotTestError("timed out waiting for \(what)")
    }

    /// A learner replica in the first steps of a 50-step update (never fewer) on one
    /// correction to `adapter`, on a database of its own: the update outlasts whatever a
    /// test does to it by far.
    static func longUpdate(_ adapter: String, port: Int, learnerArguments: [String] = []) async throws -> (database: Replica, learner: Replica, pool: PostgresPool) {
        let (holder, url, dir) = try await Self.database(adapter, port: port)
        let pool = Self.pool(url)
        var learner: Replica?
        do {
            #expect(try BuiltTool("honectl")!.run(["adapters", "create", adapter, "--settings", #"{"min_steps": 50, "max_steps": 50, "variants": 3}"#],
                                                  environment: ["HONE_DATABASE_URL": url]).status == 0)
            try await pool.query("""
                INSERT INTO hone.feedback (adapter, prompt, correction) VALUES
                  (\(adapter), 'What is the capital of Zorbania?', 'The capital of Zorbania is Quellport.')
                """)
            let started = try Replica.start(port: port + 1, dataDir: dir + "/l", databaseURL: url, learner: true, extra: learnerArguments)
            learner = started
            try await started.ready()
            try await Self.waitUntil("the first training step") {
                let (_, metrics, _) = try await started.server.get("/metrics")
                return (OperatorViews.value("hone_learner_step", in: metrics) ?? 0) >= 1
            }
            return (holder, started, pool)
        } catch {
            learner?.stop()
            holder.stop()
            await pool.close()
            throw error
        }
    }

    @Test("contradicting corrections and a diverging learning rate are rejected by the gate: no version change, the reason in the database")
    func poisonedBatches() async throws {
        let base = 21000 + Int((getpid() + 4000) % 9000)
        let (holder, url, dir) = try await Self.database("poison", port: base)
        defer { holder.stop() }
        let pool = Self.pool(url)
        let registry = Registry(pool: pool)
        let ctl = BuiltTool("honectl")!
        #expect(try ctl.run(["adapters", "create", "contra", "--settings", #"{"max_steps": 8, "variants": 4}"#],
                            environment: ["HONE_DATABASE_URL": url]).status == 0)
        #expect(try ctl.run(["adapters", "create", "diverge", "--settings", #"{"lr": 1000, "max_steps": 3, "variants": 3}"#],
                            environment: ["HONE_DATABASE_URL": url]).status == 0)
        try await pool.query("""
            INSERT INTO hone.feedback (adapter, prompt, correction) VALUES
              ('contra', 'What is the capital of Zorbania?', 'The capital of Zorbania is Quellport.'),
              ('contra', 'What is the capital of Zorbania?', 'The capital of Zorbania is Brindale.'),
              ('diverge', 'What is the capital of Zorbania?', 'The capital of Zorbania is Quellport.')
            """)
        let learner = try Replica.start(port: base + 1, dataDir: dir + "/l", databaseURL: url, learner: true)
        defer { learner.stop() }
        try await learner.ready()
        try await Self.waitUntil("both updates") {
            try await pool.query("SELECT count(*) AS n FROM hone.feedback WHERE outcome IS NULL")[0].decode("n", as: Int.self) == 0
        }
        for adapter in ["contra", "diverge"] {
            let record = try #require(try await registry.adapter(adapter))
            #expect(record.activeVersion == nil, "\(adapter) got a version")
            let versions = try await registry.versions(of: adapter)
            #expect(versions.count == 1 && versions.first?.status == "rejected")
            print("\(adapter): \(versions.first?.reason ?? "")")
            #expect(try await holder.fingerprint("smollm2:\(adapter)") == "\(adapter)@base")
        }
        #expect(try await registry.versions(of: "contra").first?.reason?.contains("not learned") == true)
        #expect(try await registry.versions(of: "diverge").first?.reason?.isEmpty == false)
        let reasons = try await pool.query("""
            SELECT s.status, s.reason FROM hone.submission_status s WHERE s.kind = 'feedback' ORDER BY s.id
            """)
        for row in reasons {
            #expect(try row.decode("status", as: String.self) == "rejected")
            #expect(try row.decode("reason", as: String.self).hasPrefix("rejected by the gate:"))
        }
        try await Self.keepReferences(pool)
        await pool.close()
    }

    @Test("a JSON answer format taught with tasks through SQL goes from its base pass rate to ≥ 80% on held-out prompts; the base and another adapter answer exactly as before")
    func skillFromTasks() async throws {
        let base = 21000 + Int((getpid() + 2000) % 9000)
        let (holder, url, dir) = try await Self.database("skill", port: base)
        defer { holder.stop() }
        let pool = Self.pool(url)
        let registry = Registry(pool: pool)
        struct File: Decodable {
            struct Skill: Decodable { let prompt: String; let schema: JSONValue; let train: [[String]]; let held_out: [String] }
            let skill: Skill
        }
        let facts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops/facts.json")
        let skill = try JSONDecoder().decode(File.self, from: Data(contentsOf: facts)).skill
        let verifier = try Verifier(.object(["type": .string("json_schema"), "schema": skill.schema]))
        func prompt(_ city: String) -> String { skill.prompt.replacingOccurrences(of: "{city}", with: city) }
        func answers(_ model: String) async throws -> [String] {
            try await holder.server.answers(skill.held_out.map(prompt), model: model, maxTokens: 40)
        }
        let ctl = BuiltTool("honectl")!
        #expect(try ctl.run(["adapters", "create", "json", "--settings", #"{"samples": 4, "revision_rounds": 1}"#],
                            environment: ["HONE_DATABASE_URL": url]).status == 0)
        #expect(try ctl.run(["adapters", "create", "other", "--rank", "4"], environment: ["HONE_DATABASE_URL": url]).status == 0)
        let otherBlob = AdapterBlob.encode(ReplicaTests.weights(seed: 7), model: RealModel.model)
        _ = try await pool.transaction { tx in
            try await registry.record(VersionCandidate(adapter: "other", parentVersion: nil, accepted: true, baseModelSHA256: RealModel.model.file.sha256,
                                                       blob: otherBlob, metrics: .object([:]), jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
        }
        try await Self.waitUntil("other@v1 to serve", timeout: .seconds(30)) { try await holder.fingerprint("smollm2:other") == "other@v1" }
        let baseBefore = try await answers("smollm2"), otherBefore = try await answers("smollm2:other")
        let before = try await answers("smollm2:json").filter { verifier.check($0).passed }.count

        for pair in skill.train {
            let reference = JSONValue.object(["city": .string(pair[0]), "country": .string(pair[1])]).jsonText
            try await pool.query("""
                SELECT hone.submit_task('json', \(prompt(pair[0])), \(JSONText(JSONValue.object(["type": .string("json_schema"), "schema": skill.schema]).jsonText))::jsonb, \(reference))
                """)
        }
        let learner = try Replica.start(port: base + 1, dataDir: dir + "/l", databaseURL: url, learner: true)
        defer { learner.stop() }
        try await learner.ready()
        try await Self.waitUntil("the tasks to finish", timeout: .seconds(540)) {
            try await pool.query("SELECT count(*) AS n FROM hone.tasks WHERE outcome IS NULL")[0].decode("n", as: Int.self) == 0
        }
        let version = try #require(try await registry.versions(of: "json").first)
        #expect(version.status == "accepted", "\(version.reason ?? "")")
        try await Self.waitUntil("json@v1 to serve", timeout: .seconds(30)) { try await holder.fingerprint("smollm2:json") == version.id }
        let after = try await answers("smollm2:json").filter { verifier.check($0).passed }.count
        print("skill: held-out JSON pass \(before)/\(skill.held_out.count) before, \(after)/\(skill.held_out.count) after \(version.id); metrics \(version.metrics.jsonText)")
        #expect(Double(after) >= 0.8 * Double(skill.held_out.count))
        #expect(after > before)
        #expect(try await answers("smollm2") == baseBefore)
        #expect(try await answers("smollm2:other") == otherBefore)
        let outcomes = try await pool.query("SELECT status, version FROM hone.submission_status WHERE kind = 'task'")
        #expect(try outcomes.allSatisfy { try $0.decode("status", as: String.self) == "trained" && $0.decode("version", as: Int.self) == version.version })
        try await Self.keepReferences(pool)
        await pool.close()
    }

    @Test("SIGTERM during an update: honed exits before the update ends, its jobs go back to the queue at once with the reason, and no version is recorded")
    func shutdownReleasesJobs() async throws {
        let (holder, learner, pool) = try await Self.longUpdate("stop", port: 21000 + Int((getpid() + 2000) % 9000))
        defer { holder.stop() }
        learner.stop()   // SIGTERM, then waits for the exit
        #expect(try await Registry(pool: pool).versions(of: "stop").isEmpty)
        let jobs = try await Queue.JobQueue(pool: pool).jobs(kind: "feedback")
        #expect(jobs.count == 1)
        for job in jobs {
            #expect(job.state == .available, "\(job.state)")
            #expect(job.errors.last?.error.contains("released: the replica shut down during the update") == true, "\(job.errors)")
        }
        await pool.close()
    }

    @Test("a version published during an update stops it at the next lease renewal, before its training ends: its job goes back at once, not failed, and the learner records nothing")
    func staleUpdateStops() async throws {
        // A 15 s lease: renewed, and the active version checked, every 5 s.
        let (holder, learner, pool) = try await Self.longUpdate("stale", port: 21000 + Int((getpid() + 3000) % 9000),
                                                                learnerArguments: ["--learner-lease", "15"])
        defer { holder.stop() }
        defer { learner.stop() }
        // Another replica publishes v1 meanwhile (as an operator's activation would change
        // the active version): this update's parent, the base model, is no longer served.
        let registry = Registry(pool: pool)
        _ = try await pool.transaction { tx in
            try await registry.record(VersionCandidate(adapter: "stale", parentVersion: nil, accepted: true,
                                                       baseModelSHA256: RealModel.model.file.sha256,
                                                       blob: AdapterBlob.encode(ReplicaTests.weights(seed: 1), model: RealModel.model),
                                                       metrics: .object([:]), jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
        }
        var lastStep = 0.0
        try await Self.waitUntil("the update given up as superseded") {
            let (_, metrics, _) = try await learner.server.get("/metrics")
            if let step = OperatorViews.value("hone_learner_step", in: metrics) { lastStep = max(lastStep, step) }
            return (OperatorViews.value(#"hone_learner_updates_total{outcome="superseded"}"#, in: metrics) ?? 0) >= 1
        }
        #expect(lastStep < 50, "the update trained to its end (step \(lastStep)) before it stopped")
        let (_, metrics, _) = try await learner.server.get("/metrics")
        for outcome in ["accepted", "rejected", "failed"] {
            #expect(OperatorViews.value("hone_learner_updates_total{outcome=\"\(outcome)\"}", in: metrics) == 0, "\(outcome)")
        }
        // The job runs again on v1 now; that update's 50 steps come long after these checks.
        #expect(try await registry.versions(of: "stale").map(\.version) == [1])
        let jobs = try await Queue.JobQueue(pool: pool).jobs(kind: "feedback")
        #expect(jobs.count == 1)
        for job in jobs {
            #expect(job.failures == 0)
            #expect(job.errors.contains { $0.error.contains("active version changed from the base model to v1") }, "\(job.errors)")
        }
        await pool.close()
    }

    @Test("""
        ten fictional facts, asked by a tenant's users, wait in that tenant's review queue only; corrected through \
        hone.feedback they leave it and are answered when asked in other words (≥ 8 of 10), anchor NLL rises ≤ 0.08 bits; \
        base and another adapter unchanged; curves, /metrics (promtool) and /status (headless Chromium) show the update and a rollback
        """)
    func factsFromCorrections() async throws {
        let base = 21000 + Int((getpid() + 6000) % 9000)
        let (holder, url, dir) = try await Self.database("facts", port: base)
        defer { holder.stop() }
        let pool = Self.pool(url)
        let registry = Registry(pool: pool)
        struct File: Decodable {
            struct Fact: Decodable { let question: String; let correction: String; let key: String; let held_out: String }
            let facts: [Fact]
        }
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops/facts.json")
        let facts = try JSONDecoder().decode(File.self, from: Data(contentsOf: path)).facts
        #expect(facts.count == 10)
        func answers(_ model: String) async throws -> [String] {
            try await holder.server.answers(facts.map(\.held_out), model: model, maxTokens: 40)
        }
        func correct(_ answers: [String]) -> Int { zip(facts, answers).filter { $1.lowercased().contains($0.key.lowercased()) }.count }
        let ctl = BuiltTool("honectl")!
        #expect(try ctl.run(["adapters", "create", "facts", "--settings", #"{"max_steps": 30}"#], environment: ["HONE_DATABASE_URL": url]).status == 0)
        #expect(try ctl.run(["adapters", "create", "other", "--rank", "4"], environment: ["HONE_DATABASE_URL": url]).status == 0)
        let otherBlob = AdapterBlob.encode(ReplicaTests.weights(seed: 11), model: RealModel.model)
        _ = try await pool.transaction { tx in
            try await registry.record(VersionCandidate(adapter: "other", parentVersion: nil, accepted: true, baseModelSHA256: RealModel.model.file.sha256,
                                                       blob: otherBlob, metrics: .object([:]), jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
        }
        try await Self.waitUntil("other@v1 to serve", timeout: .seconds(30)) { try await holder.fingerprint("smollm2:other") == "other@v1" }
        let baseBefore = try await answers("smollm2"), otherBefore = try await answers("smollm2:other")
        let before = correct(try await answers("smollm2:facts"))

        // Two tenants: facts belongs to app_a, other to app_b (roles of hone_feedback).
        for role in ["app_a", "app_b"] { try await pool.query("CREATE ROLE \(unsafe: role) LOGIN IN ROLE hone_feedback") }
        try await pool.query("UPDATE hone.adapters SET owner_role = 'app_a' WHERE name = 'facts'")
        try await pool.query("UPDATE hone.adapters SET owner_role = 'app_b' WHERE name = 'other'")
        // Users ask the questions; the model does not know these facts, so most answers are unsure.
        func ask(_ questions: [String], _ model: String) async throws -> [String] {
            try await holder.server.completions(questions, model: model, maxTokens: 40).map { try #require($0["id"]?.stringValue) }
        }
        let factIDs = try await ask(facts.map(\.question), "smollm2:facts")
        let otherIDs = try await ask(facts.prefix(3).map(\.question), "smollm2:other")
        try await Self.waitUntil("the completions to be logged", timeout: .seconds(30)) {
            try await pool.query("""
                SELECT count(*) AS n FROM hone.completions WHERE confidence IS NOT NULL AND id = ANY(\(factIDs + otherIDs)::text[])
                """)[0].decode("n", as: Int.self) == 13
        }
        let appA = Self.pool(url.replacingOccurrences(of: "postgres@", with: "app_a@"))
        let appB = Self.pool(url.replacingOccurrences(of: "postgres@", with: "app_b@"))
        func queue(_ tenant: PostgresPool) async throws -> [(id: String, adapter: String)] {
            try await tenant.query("SELECT completion_id, adapter FROM hone.review_queue ORDER BY completion_id").map {
                (try $0.decode("completion_id"), try $0.decode("adapter"))
            }
        }
        // (The held-out questions asked above are in the queues too: unsure answers all.)
        let seenA = try await queue(appA), seenB = try await queue(appB)
        let unsure = seenA.filter { factIDs.contains($0.id) }.count
        print("facts: review queue: \(seenA.count) for app_a (\(unsure) of the 10 questions), \(seenB.count) for app_b")
        #expect(unsure >= 7, "only \(unsure) of 10 unknown facts were unsure enough for review")
        #expect(seenA.allSatisfy { $0.adapter == "facts" } && seenB.allSatisfy { $0.adapter == "other" })
        #expect(seenB.contains { otherIDs.contains($0.id) })
        // app_a answers with corrections naming the completions: they leave the queue at once.
        try await appA.query("""
            INSERT INTO hone.feedback (completion_id, correction)
            SELECT i, c FROM unnest(\(factIDs)::text[], \(facts.map(\.correction))::text[]) AS t(i, c)
            """)
        #expect(try await queue(appA).map(\.id) == seenA.map(\.id).filter { !factIDs.contains($0) })
        #expect(try await queue(appB).map(\.id) == seenB.map(\.id))
        await appA.close()
        await appB.close()
        let learner = try Replica.start(port: base + 1, dataDir: dir + "/l", databaseURL: url, learner: true)
        defer { learner.stop() }
        try await learner.ready()
        try await Self.waitUntil("the corrections to finish", timeout: .seconds(840)) {
            try await pool.query("SELECT count(*) AS n FROM hone.feedback WHERE outcome IS NULL")[0].decode("n", as: Int.self) == 0
        }
        let versions = try await registry.versions(of: "facts")
        for v in versions { print("facts: \(v.id) \(v.status) \(v.reason ?? "") \(v.metrics.jsonText)") }
        let active = try #require(try await registry.adapter("facts")?.activeVersion, "no version of facts was accepted")
        try await Self.waitUntil("facts@v\(active) to serve", timeout: .seconds(30)) { try await holder.fingerprint("smollm2:facts") == "facts@v\(active)" }
        let after = try await answers("smollm2:facts")
        print("facts: held-out correct \(before)/10 before, \(correct(after))/10 after on facts@v\(active)")
        #expect(correct(after) >= 8)
        for v in versions where v.status == "accepted" {
            #expect((v.metrics["anchor_nll_rise_bits"]?.doubleValue ?? 1) <= 0.08)
        }
        #expect(try await answers("smollm2") == baseBefore)
        #expect(try await answers("smollm2:other") == otherBefore)
        // The adapter's scope is its corrections' subjects: unrelated prompts (the lifelong
        // benchmark's) get the base model's answers token for token.
        struct Lifelong: Decodable { let unrelated: [String] }
        let unrelated = Array(try JSONDecoder().decode(Lifelong.self, from: Data(contentsOf: path.deletingLastPathComponent()
            .appendingPathComponent("lifelong.json"))).unrelated.prefix(16))
        let activeRecord = try #require(try await registry.version("facts", active))
        let scope = try #require(AdapterScope(metrics: activeRecord.metrics))
        print("facts: scope of facts@v\(active): \(scope.subjects)")
        #expect(scope.subjects.count == 10)
        #expect(try await holder.server.answers(unrelated, model: "smollm2:facts", maxTokens: 40)
            == holder.server.answers(unrelated, model: "smollm2", maxTokens: 40))
        let outcomes = try await pool.query("SELECT status FROM hone.submission_status WHERE kind = 'feedback'")
        #expect(try outcomes.allSatisfy { try $0.decode("status", as: String.self) == "trained" })
        try await Self.keepReferences(pool)

        // What operators see after the update and a rollback of the other adapter.
        let otherV2 = AdapterBlob.encode(ReplicaTests.weights(seed: 12), model: RealModel.model)
        _ = try await pool.transaction { tx in
            try await registry.record(VersionCandidate(adapter: "other", parentVersion: 1, accepted: true, baseModelSHA256: RealModel.model.file.sha256,
                                                       blob: otherV2, metrics: .object([:]), jobIDs: [], examples: 0, reason: nil), actor: "test", on: tx)
        }
        let rolled = try ctl.run(["rollback", "other", "--reason", "v2 answered <b>worse</b>"], environment: ["HONE_DATABASE_URL": url])
        #expect(rolled.status == 0, "\(rolled.err)")
        try await OperatorViews.check(learner: learner.server, url: url, facts: versions.map(\.version), active: active,
                                      answered: factIDs)
        await pool.close()
    }
}
