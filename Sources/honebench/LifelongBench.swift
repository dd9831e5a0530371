import Foundation
import Logging
import Postgres
import Registry
import Tensor

/// `honebench lifelong`: the fictional facts of `ops/lifelong.json` (made by
/// `ops/make-lifelong-facts.py`) taught as sequential batches of 8 corrections through SQL to
/// a running release `honed` with a new adapter's default settings, each batch waiting for
/// its version to be served (or rejected). Scored as model-editing research scores
/// sequential edits, but on free greedy answers:
/// - reliability: the taught question's answer names the key;
/// - generalization: the two hand-written rewordings' answers name it;
/// - locality: share of the unrelated prompts whose greedy answer equals the base model's
///   token for token;
/// - neighbourhood: share of the neighbourhood questions the base answers right that the
///   adapter still answers right;
/// - retention: batch 1's reliability + generalization at the end over right after its update.
/// One JSON line per batch, then a summary. `HONE_BENCH_FACTS` (default 100) limits the facts.
/// Then the file's counterfactual corrections (real subjects given new answers) are taught to
/// an adapter of their own and reported apart (`set`), unless `HONE_BENCH_COUNTERFACTUAL=0`.
enum LifelongBench {
    struct Fact: Decodable {
        struct Neighbour: Decodable { let question: String; let answer: [String] }
        let question: String
        let correction: String
        let key: String
        let rewordings: [String]
        let neighbours: [Neighbour]
    }

    struct File: Decodable {
        let facts: [Fact]
        let counterfactual: [Fact]
        let unrelated: [String]
    }

    static let batchSize = 8
    static let maxTokens = 40

    static func run(logger: Logger) async throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops/lifelong.json")
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: url))
        let environment = ProcessInfo.processInfo.environment
        let limit = Int(environment["HONE_BENCH_FACTS"] ?? "") ?? file.facts.count
        let daemon = try BenchDaemon(name: "lifelong")
        defer { daemon.stop() }
        for _ in 0..<600 where (try? ServeBench.chat(port: daemon.port, model: "smollm2", prompt: "Hi", maxTokens: 1)) == nil {
            try await Task.sleep(for: .milliseconds(100))
        }
        let pool = PostgresPool(conninfo: daemon.databaseURL, size: 2, logger: logger)
        defer { Task { await pool.close() } }
        let session = Session(port: daemon.port, pool: pool, registry: Registry(pool: pool))
        let baseUnrelated = try await session.answers("smollm2", file.unrelated)
        try await session.teach(Array(file.facts.prefix(limit)), to: "lifelong", set: "fictional", unrelated: file.unrelated, baseUnrelated: baseUnrelated)
        if environment["HONE_BENCH_COUNTERFACTUAL"] != "0" {
            try await session.teach(file.counterfactual, to: "counterfactual", set: "counterfactual", unrelated: file.unrelated,
                                    baseUnrelated: baseUnrelated)
        }
        let baseUnchanged = try await session.answers("smollm2", file.unrelated) == baseUnrelated
        emit(["bench": "lifelong", "base_unchanged": baseUnchanged])
    }

    /// The running daemon as the benchmark's client sees it.
    struct Session {
        let port: Int
        let pool: PostgresPool
        let registry: Registry

        /// Greedy answers of `model` to `prompts`, 8 requests in flight (the server batches them).
        func answers(_ model: String, _ prompts: [String], maxTokens: Int = maxTokens) async throws -> [String] {
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                var out = [String](repeating: "", count: prompts.count), next = 0
                func add() {
                    let i = next
                    next += 1
                    group.addTask { [port] in
                        try await Parallel.onThread { (i, try ServeBench.chat(port: port, model: model, prompt: prompts[i], maxTokens: maxTokens).text) }
                    }
                }
                while next < min(8, prompts.count) { add() }
                while let (i, text) = try await group.next() {
                    out[i] = text
                    if next < prompts.count { add() }
                }
                return out
            }
        }

        func names(_ answer: String, _ keys: [String]) -> Bool {
            let words = Set(answer.lowercased().split { !$0.isLetter && !$0.isNumber }.map(String.init))
            return keys.contains { words.contains($0.lowercased()) }
        }

        /// Reliability and generalization of `facts` on `model` now.
        func scores(_ facts: [Fact], on model: String) async throws -> (reliability: Double, generalization: Double) {
            let taught = try await answers(model, facts.map(\.question))
            let reworded = try await answers(model, facts.flatMap(\.rewordings))
            let keys = facts.map { [$0.key] }
            let reliable = zip(taught, keys).filter { names($0, $1) }.count
            let general = zip(reworded, keys.flatMap { [$0, $0] }).filter { names($0, $1) }.count
            return (Double(reliable) / Double(max(1, taught.count)), Double(general) / Double(max(1, reworded.count)))
        }

        /// Teaches `facts` to a new adapter `adapter` in sequential batches through SQL, each
        /// waiting for its version to be served (or rejected); a JSON line per batch, then the
        /// summary of `set`.
        func teach(_ facts: [Fact], to adapter: String, set: String, unrelated: [String], baseUnrelated: [String]) async throws {
            let model = "smollm2:\(adapter)"
            try await pool.query("SELECT hone.create_adapter(\(adapter), '{}'::jsonb, 'lifelong benchmark')")
            let neighbours = facts.flatMap(\.neighbours)
            let baseNeighbours = try await answers("smollm2", neighbours.map(\.question))
            let beforeAll = try await scores(facts, on: model)

            var servedVersion = 0
            var firstBatchAfter: (reliability: Double, generalization: Double)?
            var batchLines: [(outcome: String, freshness: Double)] = []
            let batches = stride(from: 0, to: facts.count, by: batchSize).map { Array(facts[$0..<min($0 + batchSize, facts.count)]) }
            for (number, batch) in batches.enumerated() {
                let inserted = ContinuousClock.now
                try await pool.query("""
                    INSERT INTO hone.feedback (adapter, prompt, correction)
                    SELECT \(adapter), q, c FROM unnest(\(batch.map(\.question))::text[], \(batch.map(\.correction))::text[]) AS t(q, c)
                    """)
                var outcome = "none", freshness = Double.nan
                while ContinuousClock.now - inserted < .seconds(1800) {
                    let open: Int = try await pool.query("SELECT count(*) AS n FROM hone.feedback WHERE adapter = \(adapter) AND outcome IS NULL")[0].decode("n")
                    if open == 0 { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                let latest = try await registry.versions(of: adapter).first
                if let latest, latest.version > servedVersion, latest.status == "accepted" {
                    let wanted = "\(adapter)@v\(latest.version)"
                    while ContinuousClock.now - inserted < .seconds(1800) {
                        if (try? ServeBench.chat(port: port, model: model, prompt: "Hi", maxTokens: 1).version) == wanted { break }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    freshness = (ContinuousClock.now - inserted) / .seconds(1)
                    servedVersion = latest.version
                    outcome = "accepted"
                } else if let latest, latest.status == "rejected", latest.version > servedVersion {
                    outcome = "rejected: \(latest.reason ?? "")"
                }
                let after = try await scores(batch, on: model)
                if number == 0 { firstBatchAfter = after }
                batchLines.append((outcome, freshness))
                let metrics = latest?.metrics
                emit(["bench": "lifelong", "set": set, "batch": number + 1, "facts": batch.count, "outcome": outcome,
                      "version": latest.map { "\(adapter)@v\($0.version)" } ?? "-",
                      "freshness_s": freshness, "reliability": after.reliability, "generalization": after.generalization,
                      "steps": metrics?["steps"]?.intValue ?? 0, "seconds_training": metrics?["seconds_training"]?.doubleValue ?? .nan,
                      "seconds_gate": metrics?["seconds_gate"]?.doubleValue ?? .nan, "scope_subjects": metrics?["scope_subjects"]?.intValue ?? 0,
                      "locality_kept": metrics?["locality_kept"]?.intValue ?? 0, "neighbourhood_kept": metrics?["neighbourhood_kept"]?.intValue ?? 0,
                      "history_forgotten": metrics?["history_forgotten"]?.intValue ?? 0, "shards": metrics?["shards"]?.intValue ?? 0,
                      "repaired": metrics?["first_attempt"] != nil,
                      "anchor_nll_rise_bits": metrics?["anchor_nll_rise_bits"]?.doubleValue ?? .nan, "kl_bits": metrics?["kl_bits"]?.doubleValue ?? .nan])
            }

            let end = try await scores(facts, on: model)
            let unrelatedAnswers = try await answers(model, unrelated)
            let locality = Double(zip(unrelatedAnswers, baseUnrelated).filter { $0 == $1 }.count) / Double(max(1, unrelated.count))
            let adapterNeighbours = try await answers(model, neighbours.map(\.question))
            var baseRight = 0, kept = 0
            for (i, n) in neighbours.enumerated() where names(baseNeighbours[i], n.answer) {
                baseRight += 1
                if names(adapterNeighbours[i], n.answer) { kept += 1 }
            }
            let firstAfter = firstBatchAfter ?? (0, 0)
            let firstEnd = try await scores(batches.first ?? [], on: model)
            let retention = (firstEnd.reliability + firstEnd.generalization) / max(1e-9, firstAfter.reliability + firstAfter.generalization)
            let fresh = batchLines.map(\.freshness).filter { !$0.isNaN }
            emit(["bench": "lifelong", "set": set, "summary": true, "facts": facts.count, "batches": batches.count,
                  "accepted": batchLines.filter { $0.outcome == "accepted" }.count,
                  "rejected": batchLines.filter { $0.outcome.hasPrefix("rejected") }.count,
                  "reliability": end.reliability, "generalization": end.generalization, "locality": locality,
                  "neighbourhood": Double(kept) / Double(max(1, baseRight)), "neighbourhood_base_right": baseRight,
                  "retention": retention, "batch1_after": "\(firstAfter.reliability)/\(firstAfter.generalization)",
                  "batch1_end": "\(firstEnd.reliability)/\(firstEnd.generalization)",
                  "before_reliability": beforeAll.reliability, "before_generalization": beforeAll.generalization,
                  "freshness_median_s": percentile(fresh, 0.5), "settings": "default adapter settings"])
        }
    }
}
