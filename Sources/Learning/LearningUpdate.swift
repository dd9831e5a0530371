import Foundation
import JSON
import Llama
import Tensor
import Tokenizer
import Training

/// What one update produced: a candidate and the gate's verdict on it.
public struct UpdateOutcome: Sendable {
    /// The trained weights; nil when training itself failed (diverged).
    public var adapter: LoRAAdapter?
    public var accepted: Bool
    /// Why the gate rejected the candidate (every failed criterion).
    public var reason: String?
    /// Gate and training figures, stored with the version.
    public var metrics: [String: JSONValue]
    /// Training conversations used (new, not replay), to add to the replay buffer.
    public var examples: [[ChatMessage]]
}

/// One micro-batch update of one adapter (DESIGN.md, "The learning loop"): train a copy
/// of the adapter on the batch's verified examples plus as many replay examples, stop
/// early once the held-out probes pass, then gate the candidate. The base model and every
/// other adapter are untouched: only this copy's tensors change.
public struct LearningUpdate: Sendable {
    let model: LlamaModel
    let tokenizer: Tokenizer
    let sampler: TextSampler
    let settings: LearningSettings
    let anchors: AnchorSet

    public init(model: LlamaModel, tokenizer: Tokenizer, sampler: TextSampler, settings: LearningSettings, anchors: AnchorSet) {
        self.model = model
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.settings = settings
        self.anchors = anchors
    }

    /// Fraction of the batch's items (with probes) that must pass all their probes.
    public static let minLearnedFraction = 0.75

    /// Trains from `parent` (nil: a fresh adapter) on `plans`' examples, with `buffer` (the
    /// adapter's earlier verified examples) replayed; `progress` sees every step.
    public func run(parent: LoRAAdapter?, plans: [ItemPlan], buffer: [[ChatMessage]],
                    progress: @Sendable (StepReport) -> Void = { _ in }) async throws -> UpdateOutcome {
        let started = ContinuousClock.now
        let trained = plans.filter { $0.skipped == nil && !$0.examples.isEmpty }
        let examples = trained.flatMap(\.examples)
        let probes = trained.map(\.probes)
        var metrics: [String: JSONValue] = ["items": .int(trained.count), "examples": .int(examples.count)]

        // Where the update's time goes, stored with the version (freshness is their sum).
        var checking = Duration.zero, training = Duration.zero
        func timed<T>(_ total: inout Duration, _ work: () async throws -> T) async rethrows -> T {
            let start = ContinuousClock.now
            defer { total += ContinuousClock.now - start }
            return try await work()
        }
        let flat = probes.flatMap { $0 }
        // The probes and canaries on the parent, for the gate: checked while training runs.
        let beforeChecks = Task { try await passes(flat + settings.canaries, adapter: parent) }
        defer { beforeChecks.cancel() }
        let newSequences = examples.map { ChatExamples.sequence($0, tokenizer: tokenizer) }
        // The loss on the new examples judges a batch without held-out probes (thumbs-ups);
        // two passes over every example, so only measured for such a batch.
        let judgedByLoss = trained.allSatisfy { $0.probes.isEmpty }
        @Sendable func exampleLoss(_ adapter: LoRAAdapter?) async throws -> Double? {
            guard judgedByLoss else { return nil }
            return try await Parallel.onThread { [model] in try model.loss(newSequences, adapter: adapter).mean }
        }
        let lossBefore = try await exampleLoss(parent)
        let start = parent ?? LoRAAdapter.initialized(config: settings.lora, model: model.config, seed: settings.seed)
        var options = TrainingOptions()
        options.learningRate = settings.learningRate
        let trainer = TrainerHandle(try LoRATrainer(model: model, adapter: start, options: options))

        var random = SeededRandom(seed: settings.seed &+ UInt64(examples.count))
        let order = examples.indices.shuffled(using: &random)
        var firstLoss: Double?, lastLoss = 0.0, steps = 0
        var passedAt: Int?
        // The held-out check of step k, running while step k + 1 trains.
        var pending: (step: Int, check: Task<[Bool], Error>)?
        defer { pending?.check.cancel() }
        let anchorSequences = anchors.replaySequences
        let bufferSequences = buffer.map { ChatExamples.sequence($0, tokenizer: tokenizer) }
        do {
            for step in 1...settings.maxSteps {
                var batch: [TrainingSequence] = []
                for i in 0..<min(settings.batchSize, order.count) {
                    batch.append(newSequences[order[((step - 1) * settings.batchSize + i) % order.count]])
                }
                let replayCount = Int((Double(batch.count) * settings.replayRatio).rounded())
                let fromBuffer = bufferSequences.isEmpty ? 0 : replayCount / 2
                for _ in 0..<fromBuffer { batch.append(bufferSequences[Int(random.next() % UInt64(bufferSequences.count))]) }
                for _ in fromBuffer..<replayCount { batch.append(anchorSequences[Int(random.next() % UInt64(anchorSequences.count))]) }
                let report = try await timed(&training) { try await Parallel.onThread { [batch] in try trainer.trainer.step(batch) } }
                progress(report)
                firstLoss = firstLoss ?? report.loss
                lastLoss = report.loss
                steps = step
                // Early stop: `settleSteps` after the first step whose adapter passes every
                // held-out probe. Template probes pass before genuinely reworded questions do;
                // the few extra steps buy that generalization for little drift (replay is
                // distilled). A step's check runs while the next step trains, which changes
                // nothing but the wall time: the stop is decided by the same checks.
                if flat.isEmpty {
                    if step >= settings.minSteps { break }
                    continue
                }
                if passedAt == nil, let (checked, check) = pending {
                    pending = nil
                    if try await timed(&checking, { try await check.value }).allSatisfy({ $0 }) { passedAt = checked }
                }
                if let passedAt {
                    if step >= passedAt + settings.settleSteps { break }
                } else if step >= settings.minSteps {
                    let adapter = trainer.trainer.adapter
                    let check = Task { try await passes(flat, adapter: adapter) }
                    guard settings.settleSteps == 0 else { pending = (step, check); continue }
                    if try await timed(&checking, { try await check.value }).allSatisfy({ $0 }) {
                        passedAt = step
                        break
                    }
                }
            }
        } catch let error as TrainingError {
            metrics["steps"] = .int(steps)
            metrics["seconds"] = .double((ContinuousClock.now - started) / .seconds(1))
            return UpdateOutcome(adapter: nil, accepted: false, reason: "training diverged: \(error.description)",
                                 metrics: metrics, examples: examples)
        }
        pending?.check.cancel()
        let candidate = trainer.trainer.adapter

        // The gate: the candidate's checks run beside its drift measurement.
        let gateStarted = ContinuousClock.now
        async let canaryChecks = passes(settings.canaries, adapter: candidate)
        async let probeChecks = passes(flat, adapter: candidate)
        async let lossAfterTask = exampleLoss(candidate)
        let drift = try await Parallel.onThread { [model, anchors] in
            try Drift.measure(model: model, sequences: anchors.gate, adapter: candidate)
        }
        let after = try await canaryChecks, probePasses = try await probeChecks, lossAfter = try await lossAfterTask
        let before = try await timed(&checking) { try await beforeChecks.value }
        let probesBefore = Array(before.prefix(flat.count)), canariesBefore = Array(before.dropFirst(flat.count))
        let newlyFailed = zip(probesBefore, probePasses).filter { $0 && !$1 }.count
        let canaryRegressions = zip(canariesBefore, after).filter { $0 && !$1 }.count
        var offset = 0, learnedItems = 0, itemsWithProbes = 0
        for itemProbes in probes {
            let results = probePasses[offset..<(offset + itemProbes.count)]
            offset += itemProbes.count
            guard !itemProbes.isEmpty else { continue }
            itemsWithProbes += 1
            if results.allSatisfy({ $0 }) { learnedItems += 1 }
        }
        metrics["seconds_training"] = .double(training / .seconds(1))
        metrics["seconds_checks"] = .double(checking / .seconds(1))
        metrics["seconds_gate"] = .double((ContinuousClock.now - gateStarted) / .seconds(1))
        metrics["steps"] = .int(steps)
        metrics["probes_all_passed_at_step"] = passedAt.map { .int($0) } ?? .null
        metrics["loss_first"] = .double(firstLoss ?? 0)
        metrics["loss_last"] = .double(lastLoss)
        if let lossBefore, let lossAfter {
            metrics["examples_loss_before"] = .double(lossBefore)
            metrics["examples_loss_after"] = .double(lossAfter)
        }
        metrics["probes"] = .int(flat.count)
        metrics["probes_passed_before"] = .int(probesBefore.filter { $0 }.count)
        metrics["probes_passed_after"] = .int(probePasses.filter { $0 }.count)
        metrics["probes_newly_failed"] = .int(newlyFailed)
        metrics["items_learned"] = .int(learnedItems)
        metrics["items_with_probes"] = .int(itemsWithProbes)
        metrics["canaries"] = .int(settings.canaries.count)
        metrics["canary_regressions"] = .int(canaryRegressions)
        metrics["anchor_nll_base_bits"] = .double(drift.baseNLL)
        metrics["anchor_nll_bits"] = .double(drift.adapterNLL)
        metrics["anchor_nll_rise_bits"] = .double(drift.nllRise)
        metrics["kl_bits"] = .double(drift.kl)
        metrics["replay_buffer"] = .int(buffer.count)

        var failures: [String] = []
        let finite = candidate.isFinite && drift.adapterNLL.isFinite && drift.kl.isFinite && lastLoss.isFinite
        if !finite { failures.append("not finite: NaN or infinity in the weights or metrics") }
        if itemsWithProbes > 0 {
            let passedBefore = probesBefore.filter { $0 }.count, passedAfter = probePasses.filter { $0 }.count
            if newlyFailed > 0 { failures.append("\(newlyFailed) held-out check(s) that passed before now fail") }
            if Double(learnedItems) < Self.minLearnedFraction * Double(itemsWithProbes) {
                failures.append("not learned: \(learnedItems) of \(itemsWithProbes) items pass their held-out checks (need \(Int((Self.minLearnedFraction * 100).rounded()))%)")
            } else if passedAfter <= passedBefore && passedBefore < flat.count {
                failures.append("not learned: held-out checks pass \(passedAfter) of \(flat.count) times, \(passedBefore) before")
            }
        } else if let lossBefore, let lossAfter, !(lossAfter < lossBefore) {
            failures.append(String(format: "not learned: the loss on the new examples did not fall (%.3f → %.3f)", lossBefore, lossAfter))
        }
        if canaryRegressions > 0 { failures.append("\(canaryRegressions) canary check(s) regressed") }
        if drift.nllRise > settings.maxNLLRise {
            failures.append(String(format: "general drift: anchor NLL rose %.3f bits/token (limit %.3f)", drift.nllRise, settings.maxNLLRise))
        }
        if drift.kl > settings.maxKL {
            failures.append(String(format: "general drift: KL(base‖candidate) %.3f bits/token (limit %.3f)", drift.kl, settings.maxKL))
        }
        metrics["seconds"] = .double((ContinuousClock.now - started) / .seconds(1))
        return UpdateOutcome(adapter: finite ? candidate : nil, accepted: failures.isEmpty,
                             reason: failures.isEmpty ? nil : failures.joined(separator: "; "), metrics: metrics, examples: examples)
    }

    /// Whether each probe's greedy answer passes its verifier with `adapter`.
    func passes(_ probes: [Probe], adapter: LoRAAdapter?) async throws -> [Bool] {
        guard !probes.isEmpty else { return [] }
        let answers = try await sampler.complete(probes.map { SampleRequest(messages: $0.messages, maxTokens: $0.maxTokens) }, adapter: adapter)
        return zip(probes, answers).map { $0.verifier.check($1).passed }
    }
}

/// The trainer crosses from the update's task to the thread that runs a step; the update
/// awaits each step before touching it again, so only one thread uses it at a time.
final class TrainerHandle: @unchecked Sendable {
    let trainer: LoRATrainer
    init(_ trainer: LoRATrainer) { self.trainer = trainer }
}
