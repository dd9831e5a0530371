import Foundation
import Tensor
import Generation
import JSON
import Learning
import Llama
import Server
import Tokenizer

/// `honebench learn`: one learning update on the facts of `ops/facts.json` (corrections),
/// without a database: how long it takes, what the gate measured, and how many facts the
/// candidate answers when asked in words it never saw. `HONE_BENCH_FACTS` (default 8) and
/// `HONE_BENCH_LEARN_SETTINGS` (an adapter settings object) vary the run; `HONE_BENCH_VERBOSE=1`
/// prints each step's tokens and time and the locality answers that changed,
/// `HONE_BENCH_PROFILE=1` the update's time per op (training, checks and gate together).
enum LearnBench {
    static func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let path = environment["HONE_MODEL"] else { throw BenchError(message: "HONE_MODEL is not set (ops/bench sets it)") }
        let model = try LlamaModel(path: path)
        let tokenizer = try Tokenizer(gguf: model.file)
        let snapshot = ModelSnapshot(model: model, tokenizer: tokenizer, modelID: "smollm2", version: "base")
        let settings = try LearningSettings(json: try JSONValue(parsing: environment["HONE_BENCH_LEARN_SETTINGS"] ?? "{}"))
        let facts = try Facts.load().prefix(Int(environment["HONE_BENCH_FACTS"] ?? "8") ?? 8)
        // The learner's generations run as learning work, as in the daemon (its learning
        // scheduler); HONE_BENCH_SAMPLER=serving runs them at serving priority instead.
        let samplerWork: WorkClass = environment["HONE_BENCH_SAMPLER"] == "serving" ? .serving : .learning
        let scheduler = BatchScheduler(maxBatch: 16, compute: ComputeScheduler(), work: samplerWork)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await scheduler.run() }
            let sampler = SchedulerSampler(scheduler: scheduler, snapshot: snapshot)
            let clock = ContinuousClock()
            let started = clock.now
            var anchors = AnchorSet(answers: try await AnchorSet.answers(sampler: sampler), tokenizer: tokenizer)
            if environment["HONE_BENCH_DISTILL"] != "0" { _ = try anchors.distill(model: model) }
            var locality = LocalitySet(answers: try await LocalitySet.answers(sampler: sampler), tokenizer: tokenizer)
            _ = try locality.distill(model: model)
            let anchorSeconds = (clock.now - started) / .seconds(1)
            let builder = ExampleBuilder(sampler: sampler, settings: settings, adapter: nil)
            if environment["HONE_BENCH_KIND"] == "skill" {
                try await skill(model: model, tokenizer: tokenizer, sampler: sampler, settings: settings, anchors: anchors, builder: builder,
                                compute: scheduler.compute)
                group.cancelAll()
                return
            }
            let plans = try await builder.plans(facts.enumerated().map { i, fact in
                WorkItem(jobID: Int64(i + 1), kind: "feedback", args: .object([
                    "feedback_id": .int(i + 1), "adapter": .string("bench"), "prompt": .string(fact.question),
                    "correction": .string(fact.correction)]))
            })
            let planned = clock.now
            ProcessMetrics.resetPeakResident()
            let startMB = (ProcessMetrics.current()?.residentBytes ?? .nan) / 1_048_576
            let update = LearningUpdate(model: model, tokenizer: tokenizer, sampler: sampler, settings: settings, anchors: anchors,
                                        locality: locality, compute: scheduler.compute)
            let verbose = environment["HONE_BENCH_VERBOSE"] == "1"
            let profile = environment["HONE_BENCH_PROFILE"] == "1" ? OpProfile() : nil
            @Sendable func run() async throws -> UpdateOutcome {
                try await update.run(plans: plans, buffer: [], progress: { report in
                    guard verbose else { return }
                    FileHandle.standardError.write(Data(String(format: "step %d: %d tokens, %d with loss, %.2f s, loss %.3f\n", report.step,
                                                               report.tokens, report.targetTokens, report.seconds, report.loss).utf8))
                })
            }
            let outcome = if let profile { try await profile.record(run) } else { try await run() }
            let trained = clock.now
            if let profile { ProfileBench.report("update", profile, wall: (trained - planned) / .seconds(1), passes: 1) }
            let peakMB = (ProcessMetrics.peakResidentBytes() ?? .nan) / 1_048_576
            let heap = ProcessMetrics.heapUsage()
            if verbose {
                for point in outcome.curve {
                    guard let heldOut = point.heldOut else { continue }
                    FileHandle.standardError.write(Data("step \(point.step): held-out \(heldOut.passed)/\(heldOut.checks)\n".utf8))
                }
            }
            if verbose, let adapter = outcome.adapter {
                // What changed: the gate's locality prompts, base answer then candidate's.
                let prompts = LocalitySet.general + locality.neighbours(of: facts.map(\.question))
                let requests = prompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: LocalitySet.maxTokens) }
                let base = try await sampler.complete(requests, adapter: nil), tuned = try await sampler.complete(requests, adapter: adapter)
                for (p, (b, t)) in zip(prompts, zip(base, tuned)) where b != t {
                    FileHandle.standardError.write(Data("\(p)\n  base: \(b)\n  tuned: \(t)\n".utf8))
                }
            }
            var correct = 0
            if let adapter = outcome.adapter {
                let answers = try await sampler.complete(facts.map {
                    SampleRequest(messages: [ChatMessage(role: "user", content: $0.heldOut)], maxTokens: 48)
                }, adapter: adapter)
                correct = zip(facts, answers).filter { $1.lowercased().contains($0.key.lowercased()) }.count
            }
            let m = outcome.metrics
            emit(["bench": "learn", "facts": facts.count, "accepted": outcome.accepted,
                  "steps": m["steps"]?.intValue ?? 0, "anchors_s": anchorSeconds,
                  "plan_s": (planned - started) / .seconds(1) - anchorSeconds, "update_s": (trained - planned) / .seconds(1),
                  "training_s": m["seconds_training"]?.doubleValue ?? .nan, "gate_s": m["seconds_gate"]?.doubleValue ?? .nan,
                  "micro_batch_tokens": settings.microBatchTokens, "update_peak_rss_mb": peakMB.rounded(),
                  "rss_before_update_mb": startMB.rounded(), "heap_in_use_mb": ((heap?.inUse ?? .nan) / 1_048_576).rounded(),
                  "heap_free_mb": ((heap?.free ?? .nan) / 1_048_576).rounded(),
                  "held_out_correct": correct, "nll_rise_bits": m["anchor_nll_rise_bits"]?.doubleValue ?? .nan,
                  "kl_bits": m["kl_bits"]?.doubleValue ?? .nan, "loss_last": m["loss_last"]?.doubleValue ?? .nan,
                  "locality_kept": m["locality_kept"]?.intValue ?? 0, "contaminated": m["locality_contaminated"]?.intValue ?? 0, "neighbourhood_kept": m["neighbourhood_kept"]?.intValue ?? 0,
                  "neighbourhood": m["neighbourhood"]?.intValue ?? 0, "reason": outcome.reason ?? ""])
            group.cancelAll()
        }
    }
}

extension LearnBench {
    /// The JSON-format skill of `ops/facts.json`, taught with tasks: pass rates on held-out
    /// cities before (base model) and after the update.
    static func skill(model: LlamaModel, tokenizer: Tokenizer, sampler: SchedulerSampler, settings: LearningSettings,
                      anchors: AnchorSet, builder: ExampleBuilder, compute: ComputeScheduler) async throws {
        let skill = try Skill.load()
        let verifier = try Verifier(.object(["type": .string("json_schema"), "schema": skill.schema]))
        func prompt(_ city: String) -> String { skill.prompt.replacingOccurrences(of: "{city}", with: city) }
        func passRate(_ adapter: LoRAAdapter?) async throws -> Double {
            let answers = try await sampler.complete(skill.heldOut.map {
                SampleRequest(messages: [ChatMessage(role: "user", content: prompt($0))], maxTokens: 48)
            }, adapter: adapter)
            return Double(answers.filter { verifier.check($0).passed }.count) / Double(answers.count)
        }
        let before = try await passRate(nil)
        let clock = ContinuousClock(), started = clock.now
        let plans = try await builder.plans(skill.train.enumerated().map { i, pair in
            let reference = JSONValue.object(["city": .string(pair[0]), "country": .string(pair[1])]).jsonText
            return WorkItem(jobID: Int64(i + 1), kind: "task", args: .object([
                "task_id": .int(i + 1), "adapter": .string("bench"), "prompt": .string(prompt(pair[0])),
                "verifier": .object(["type": .string("json_schema"), "schema": skill.schema]), "reference": .string(reference)]))
        })
        let update = LearningUpdate(model: model, tokenizer: tokenizer, sampler: sampler, settings: settings, anchors: anchors,
                                    compute: compute)
        let outcome = try await update.run(plans: plans, buffer: [])
        var after = Double.nan
        if let adapter = outcome.adapter { after = try await passRate(adapter) }
        let m = outcome.metrics
        emit(["bench": "skill", "tasks": plans.count, "sources": plans.map { $0.notes["source"]?.stringValue ?? $0.skipped?.reason ?? "?" }.joined(separator: ","),
              "accepted": outcome.accepted, "steps": m["steps"]?.intValue ?? 0, "seconds": (clock.now - started) / .seconds(1),
              "held_out_pass_before": before, "held_out_pass_after": after,
              "nll_rise_bits": m["anchor_nll_rise_bits"]?.doubleValue ?? .nan, "kl_bits": m["kl_bits"]?.doubleValue ?? .nan,
              "reason": outcome.reason ?? ""])
    }
}

/// The JSON-format skill of `ops/facts.json`.
struct Skill: Decodable {
    let prompt: String
    let schema: JSONValue
    let train: [[String]]
    let heldOut: [String]

    enum CodingKeys: String, CodingKey { case prompt, schema, train, heldOut = "held_out" }

    static func load() throws -> Skill {
        struct File: Decodable { let skill: Skill }
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: Facts.url)).skill
    }
}

/// The fictional facts of `ops/facts.json`.
struct Facts: Decodable {
    let question: String
    let correction: String
    let key: String
    let heldOut: String

    enum CodingKeys: String, CodingKey { case question, correction, key, heldOut = "held_out" }

    static func load() throws -> [Facts] {
        struct File: Decodable { let facts: [Facts] }
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).facts
    }

    static var url: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops/facts.json")
    }
}
