import Foundation
import Generation
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
    /// Each trained item's held-out checks on the parent and on the candidate, by job id.
    public var items: [Int64: ItemResult] = [:]
    /// Unrelated prompts whose answers carried a taught answer (the gate's contamination).
    public var leaked: [String] = []
    /// Earlier corrections the parent answered and the candidate no longer does.
    public var forgotten: [Probe] = []
    /// Whether the gate's only objections were leaks and forgetting, which a second
    /// attempt can aim at.
    public var repairable = false
    /// Each optimizer step of the training that made `adapter`, in order.
    public var curve: [CurvePoint] = []
}

/// Where an update is, for whoever shows its progress.
public enum UpdateStage: Sendable {
    /// Optimizer steps, with held-out checks beside them.
    case training
    /// The candidate's drift, locality and check passes.
    case gate
}

/// One optimizer step of an update, as `hone.version_steps` keeps it.
public struct CurvePoint: Sendable, Equatable {
    public var step: Int
    /// Mean loss per target token before the step (nats).
    public var loss: Double
    /// Gradient norm before clipping.
    public var gradNorm: Double
    public var learningRate: Double
    /// Held-out probes that passed with the adapter after this step, of how many; nil when
    /// the learner did not check after this step.
    public var heldOut: (passed: Int, checks: Int)?

    public init(step: Int, loss: Double, gradNorm: Double, learningRate: Double, heldOut: (passed: Int, checks: Int)? = nil) {
        self.step = step
        self.loss = loss
        self.gradNorm = gradNorm
        self.learningRate = learningRate
        self.heldOut = heldOut
    }

    public static func == (a: CurvePoint, b: CurvePoint) -> Bool {
        a.step == b.step && a.loss == b.loss && a.gradNorm == b.gradNorm && a.learningRate == b.learningRate
            && a.heldOut?.passed == b.heldOut?.passed && a.heldOut?.checks == b.heldOut?.checks
    }
}

/// One item's own held-out checks before and after an update: whether it was learned, not
/// just trained into a version.
public struct ItemResult: Sendable, Equatable {
    public var checks: Int
    public var passedBefore: Int
    public var passedAfter: Int

    /// "learned" when every check passes on the candidate; "trained, not yet answered on
    /// rewordings" when some fail; "trained" for an item without checks (a thumbs-up).
    public var summary: String {
        checks == 0 ? "trained" : passedAfter == checks ? "learned" : "trained, not yet answered on rewordings"
    }
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
    /// The base model's answers the candidate must keep (nil: no locality checks).
    let locality: LocalitySet?
    /// Runs the update's CPU work (training steps, drift and gate passes) as learning.
    let compute: ComputeScheduler
    /// Locality answers of shards, kept from earlier gates (nil: every gate makes its own).
    let shardAnswers: ShardAnswers?

    public init(model: LlamaModel, tokenizer: Tokenizer, sampler: TextSampler, settings: LearningSettings, anchors: AnchorSet,
                locality: LocalitySet? = nil, compute: ComputeScheduler, shardAnswers: ShardAnswers? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.settings = settings
        self.anchors = anchors
        self.locality = locality
        self.compute = compute
        self.shardAnswers = shardAnswers
    }

    /// Trains a shard on `plans`' examples and gates `parent` with it added; `history` (checks
    /// of the adapter's earlier corrections) must not regress. With scoped settings, a batch
    /// of corrections trains a subject shard of its own, answering only prompts that name its
    /// subjects, from the general shard when there is one (so those prompts keep the
    /// adapter's skills), else from a fresh adapter; earlier shards stay frozen, so it cannot
    /// wear down what they learned. Any other batch trains the general shard on from the
    /// parent's, with `buffer` (the adapter's earlier verified examples) replayed.
    /// `progress` sees every step.
    ///
    /// A candidate refused only because taught answers leaked into unrelated answers, or
    /// because it forgot earlier corrections, is trained once more with the leaked prompts
    /// at the base model's answers (targeted negatives) and the forgotten corrections at
    /// their taught answers, both in every step: the repaired candidate faces the whole gate
    /// again, and its metrics name the repair (`repair_prompts`, `repair_forgotten`,
    /// `first_attempt`).
    ///
    /// The gate judges the candidate as it will be served: each prompt answered by the shard
    /// that covers it, or by the base model.
    public func run(parent: AdapterShards = AdapterShards(), plans: [ItemPlan], buffer: [[ChatMessage]], history: [Probe] = [],
                    progress: @Sendable (StepReport) -> Void = { _ in },
                    stage: @Sendable (UpdateStage) -> Void = { _ in }) async throws -> UpdateOutcome {
        let served = Served(parent: parent, scoped: settings.scoped, plans: plans)
        // A subject shard answers only its own subjects: earlier items are not its to replay.
        let buffer = served.shardScope == nil ? buffer : []
        let first = try await attempt(served, plans: plans, buffer: buffer, history: history, repair: [], progress: progress, stage: stage)
        guard !first.accepted, first.repairable, !first.leaked.isEmpty || !first.forgotten.isEmpty else { return first }
        let conversations = first.leaked.compactMap { prompt in
            locality?.baseAnswers[prompt].map { [ChatMessage(role: "user", content: prompt), ChatMessage(role: "assistant", content: $0)] }
        }
        let sequences = conversations.map { ChatExamples.sequence($0, tokenizer: tokenizer) }
        var repair = try await compute.run(.learning) { [model] in try AnchorSet.distilled(sequences, model: model) }
        let remembered = first.forgotten.compactMap { probe in
            probe.taught.map { ChatExamples.sequence(probe.messages + [ChatMessage(role: "assistant", content: $0.answer)], tokenizer: tokenizer) }
        }
        repair += remembered
        var second = try await attempt(served, plans: plans, buffer: buffer, history: history, repair: repair, progress: progress, stage: stage)
        second.metrics["repair_prompts"] = .int(sequences.count)
        second.metrics["repair_forgotten"] = .int(remembered.count)
        second.metrics["first_attempt"] = .string(first.reason ?? "")
        second.metrics["seconds"] = .double((first.metrics["seconds"]?.doubleValue ?? 0) + (second.metrics["seconds"]?.doubleValue ?? 0))
        return second
    }

    /// The parent as served, and the shard an update trains beside it.
    struct Served: Sendable {
        let parent: AdapterShards
        /// The new shard's subjects; nil when it is the general shard.
        let shardScope: AdapterScope?
        /// Where training starts (nil: a fresh adapter).
        let start: LoRAAdapter?

        init(parent: AdapterShards, scoped: Bool, plans: [ItemPlan]) {
            self.parent = parent
            shardScope = scoped ? AdapterScope.of(training: plans.filter { $0.skipped == nil && !$0.examples.isEmpty }) : nil
            start = parent.general?.weights
        }

        /// The candidate as served: the parent with `weights` as the new shard.
        func candidate(_ weights: LoRAAdapter) -> AdapterShards {
            parent.adding(AdapterShard(weights: weights, scope: shardScope))
        }
    }

    /// One training run and its gate; `repair` is replayed every step beside the neighbours.
    func attempt(_ served: Served, plans: [ItemPlan], buffer: [[ChatMessage]], history: [Probe], repair: [TrainingSequence],
                 progress: @Sendable (StepReport) -> Void, stage: @Sendable (UpdateStage) -> Void) async throws -> UpdateOutcome {
        let parent = served.parent
        let started = ContinuousClock.now
        stage(.training)
        let trained = plans.filter { $0.skipped == nil && !$0.examples.isEmpty }
        let examples = trained.flatMap(\.examples)
        let probes = trained.flatMap(\.probes)
        var metrics: [String: JSONValue] = ["items": .int(trained.count), "examples": .int(examples.count)]
        // The parent's results of the checks that compare before and after: run while training runs.
        let beforeChecks = Task { try await passes(probes + settings.canaries + history, served: parent) }
        defer { beforeChecks.cancel() }
        let newSequences = examples.map { ChatExamples.sequence($0, tokenizer: tokenizer) }
        // The loss on the new examples judges a batch without held-out probes (thumbs-ups);
        // two passes over every example, so only measured for such a batch.
        let judgedByLoss = probes.isEmpty
        @Sendable func exampleLoss(_ adapter: LoRAAdapter?) async throws -> Double? {
            guard judgedByLoss else { return nil }
            return try await compute.run(.learning) { [model] in try model.loss(newSequences, adapter: adapter).mean }
        }
        let lossBefore = try await exampleLoss(served.start)
        let run: TrainingRun
        do {
            let neighbours = locality?.replayNeighbours(of: trained.compactMap(\.question)) ?? []
            run = try await train(served, sequences: newSequences, probes: probes, buffer: buffer, neighbours: neighbours,
                                  repair: repair, progress: progress)
        } catch let failure as TrainingFailure {
            metrics["steps"] = .int(failure.steps)
            metrics["seconds"] = .double((ContinuousClock.now - started) / .seconds(1))
            return UpdateOutcome(adapter: nil, accepted: false, reason: "training diverged: \(failure.error.description)",
                                 metrics: metrics, examples: examples)
        }
        let candidate = run.adapter

        stage(.gate)
        try Task.checkCancellation()
        let gate = try await measure(candidate, served: served.candidate(candidate), trained: trained, probes: probes, history: history,
                                     before: beforeChecks, exampleLoss: exampleLoss, lossBefore: lossBefore)
        var input = gate.input
        metrics.merge(gate.metrics) { $1 }
        input.finite = input.finite && run.lastLoss.isFinite
        let verdict = settings.gate.decide(input)
        var items: [Int64: ItemResult] = [:], offset = 0
        for plan in trained {
            let range = offset..<(offset + plan.probes.count)
            offset += plan.probes.count
            items[plan.jobID] = ItemResult(checks: range.count, passedBefore: input.probes.before[range].filter { $0 }.count,
                                           passedAfter: input.probes.after[range].filter { $0 }.count)
        }

        metrics.merge(settings.gate.metrics(input)) { $1 }
        metrics["seconds_training"] = .double(run.training / .seconds(1))
        metrics["seconds_checks"] = .double((run.checking + gate.waitedForParent) / .seconds(1))
        metrics["steps"] = .int(run.steps)
        metrics["probes_all_passed_at_step"] = run.passedAt.map { .int($0) } ?? .null
        metrics["loss_first"] = .double(run.firstLoss)
        metrics["loss_last"] = .double(run.lastLoss)
        metrics["replay_buffer"] = .int(buffer.count)
        let shards = served.candidate(candidate)
        if let scope = shards.scope {
            metrics["scope"] = scope.json
            metrics["scope_subjects"] = .int(scope.subjects.count)
        }
        metrics["shard"] = served.shardScope?.json ?? .string("general")
        metrics["shards"] = .int(shards.shards.count)
        metrics["seconds"] = .double((ContinuousClock.now - started) / .seconds(1))
        let leaked = zip(gate.localPrompts, input.neighbourhood + input.locality).filter { $0.1.leak != nil }.map(\.0)
        let forgotten = history.indices.filter { input.history.before[$0] && !input.history.after[$0] }.map { history[$0] }
        let repairable = !verdict.reasons.isEmpty && verdict.reasons.allSatisfy {
            switch $0 {
            case .contaminated, .forgot: true
            default: false
            }
        }
        return UpdateOutcome(adapter: input.finite ? candidate : nil, accepted: verdict.accepted, reason: verdict.reason,
                             metrics: metrics, examples: examples, items: items, leaked: leaked, forgotten: forgotten, repairable: repairable,
                             curve: run.curve)
    }

    /// What the gate judges a candidate on, measured: its checks (held-out probes, canaries,
    /// the adapter's history) against the parent's from `before`, its answers to the
    /// neighbourhood and locality prompts, its anchor drift and, for a batch without probes,
    /// its loss on the examples. The three costly parts run together; each one's finish
    /// (seconds into the gate) in the metrics says which one the gate waited for.
    func measure(_ candidate: LoRAAdapter, served: AdapterShards, trained: [ItemPlan], probes: [Probe], history: [Probe],
                 before: Task<[Bool], Error>, exampleLoss: @Sendable (LoRAAdapter?) async throws -> Double?,
                 lossBefore: Double?) async throws
        -> (input: GateInputs, localPrompts: [String], metrics: [String: JSONValue], waitedForParent: Duration) {
        let gateStarted = ContinuousClock.now
        let neighbourPrompts = locality?.neighbours(of: trained.compactMap(\.question)) ?? []
        let localPrompts = neighbourPrompts + (locality?.generalPrompts.prefix(settings.localityPrompts) ?? [])
        @Sendable func finished<T>(_ work: () async throws -> T) async throws -> (T, Double) {
            let value = try await work()
            return (value, (ContinuousClock.now - gateStarted) / .seconds(1))
        }
        async let afterChecks = finished { try await passes(probes + settings.canaries + history, served: served) }
        async let localAnswers = finished {
            // A prompt outside the scope gets the base model's answer, which the set holds.
            try await routed(localPrompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: LocalitySet.maxTokens) },
                             served: served, known: { locality?.baseAnswers[$0.messages[0].content] }, remembered: shardAnswers)
        }
        async let lossAfterTask = exampleLoss(candidate)
        let (drift, driftSeconds) = try await finished {
            try await compute.run(.learning) { [model, anchors] in
                try Drift.measure(model: model, sequences: anchors.gate, adapter: candidate)
            }
        }
        let (after, checksSeconds) = try await afterChecks, lossAfter = try await lossAfterTask
        let waitStarted = ContinuousClock.now
        let before = try await before.value
        let waitedForParent = ContinuousClock.now - waitStarted

        var metrics: [String: JSONValue] = ["seconds_gate_checks": .double(checksSeconds), "seconds_gate_drift": .double(driftSeconds),
                                            "anchor_nll_base_bits": .double(drift.baseNLL), "anchor_nll_bits": .double(drift.adapterNLL)]
        var input = GateInputs()
        var rest = after[...]
        func take(_ n: Int) -> [Bool] { defer { rest = rest.dropFirst(n) }; return Array(rest.prefix(n)) }
        input.probes = CheckPair(before: Array(before[0..<probes.count]), after: take(probes.count))
        input.canaries = CheckPair(before: Array(before[probes.count..<(probes.count + settings.canaries.count)]), after: take(settings.canaries.count))
        input.history = CheckPair(before: Array(before.suffix(history.count)), after: take(history.count))
        if let locality {
            // What this adapter was taught: its corrections' key words, now and before.
            let taught = (probes + history).compactMap(\.taught)
            let (answers, localitySeconds) = try await localAnswers
            metrics["seconds_gate_locality"] = .double(localitySeconds)
            let judged = zip(localPrompts, answers).map { locality.judge($1, to: $0, taught: taught) }
            input.neighbourhood = Array(judged.prefix(neighbourPrompts.count))
            input.locality = Array(judged.dropFirst(neighbourPrompts.count))
        }
        input.itemProbeCounts = trained.map(\.probes.count)
        if let lossBefore, let lossAfter {
            input.exampleLoss = (lossBefore, lossAfter)
            metrics["examples_loss_before"] = .double(lossBefore)
            metrics["examples_loss_after"] = .double(lossAfter)
        }
        input.nllRise = drift.nllRise
        input.kl = drift.kl
        input.finite = candidate.isFinite && drift.adapterNLL.isFinite && drift.kl.isFinite
        metrics["seconds_gate"] = .double((ContinuousClock.now - gateStarted) / .seconds(1))
        return (input, localPrompts, metrics, waitedForParent)
    }

    /// What training produced: the candidate and how it got there.
    struct TrainingRun {
        var adapter: LoRAAdapter
        var steps: Int
        /// The first step whose adapter passed every held-out probe.
        var passedAt: Int?
        var firstLoss: Double
        var lastLoss: Double
        /// Every step's figures, with the held-out checks where they ran.
        var curve: [CurvePoint]
        /// Time in optimizer steps, and waiting on held-out checks.
        var training: Duration
        var checking: Duration
    }

    /// Training diverged at a step (a non-finite loss, gradient or weight).
    struct TrainingFailure: Error {
        var error: TrainingError
        var steps: Int
    }

    /// The optimizer loop: each step trains `batchSize` new sequences plus replay (half the
    /// adapter's buffer, half distilled anchors), up to `neighbourReplay` of `neighbours`
    /// (questions shaped like the corrections, with the base model's distributions) and all
    /// of `repair` (a second attempt's targets). Early stop: `settleSteps` after the first
    /// step whose adapter passes every held-out probe. Template probes pass before genuinely
    /// reworded questions do; the few extra steps buy that generalization for little drift
    /// (replay is distilled). A step's check runs while the next step trains, which changes
    /// nothing but the wall time: the stop is decided by the same checks. While fewer than
    /// half of the probes pass, only every other step is checked: a check costs ~40% of a
    /// step's compute, and probes come to pass a few at a time (8 corrections: 0, 1, 1, 2, 3,
    /// 3, 4, 6, 7, 8 of 8 from step 4 on), so the skipped checks almost never hold the stop.
    func train(_ served: Served, sequences newSequences: [TrainingSequence], probes: [Probe],
               buffer: [[ChatMessage]], neighbours: [TrainingSequence], repair: [TrainingSequence] = [], progress: @Sendable (StepReport) -> Void) async throws -> TrainingRun {
        var training = Duration.zero, checking = Duration.zero
        func timed<T>(_ total: inout Duration, _ work: () async throws -> T) async rethrows -> T {
            let start = ContinuousClock.now
            defer { total += ContinuousClock.now - start }
            return try await work()
        }
        let start = served.start ?? LoRAAdapter.initialized(config: settings.lora, model: model.config, seed: settings.seed)
        var options = TrainingOptions()
        options.learningRate = settings.learningRate
        options.microBatchTokens = settings.microBatchTokens
        let trainer = TrainerHandle(try LoRATrainer(model: model, adapter: start, options: options))
        var random = SeededRandom(seed: settings.seed &+ UInt64(newSequences.count))
        let order = newSequences.indices.shuffled(using: &random)
        var firstLoss: Double?, lastLoss = 0.0, steps = 0
        var passedAt: Int?
        var curve: [CurvePoint] = []
        var nextCheck = settings.minSteps
        /// Keeps step `step`'s held-out results on its curve point and schedules the next
        /// check; true when all passed.
        func record(_ passed: [Bool], after step: Int) -> Bool {
            let count = passed.filter { $0 }.count
            curve[step - 1].heldOut = (count, passed.count)
            nextCheck = Self.nextCheck(after: step, passed: count, of: passed.count)
            return count == passed.count
        }
        // The held-out check of step k, running while step k + 1 trains.
        var pending: (step: Int, check: Task<[Bool], Error>)?
        defer { pending?.check.cancel() }
        let anchorSequences = anchors.replaySequences
        let bufferSequences = buffer.map { ChatExamples.sequence($0, tokenizer: tokenizer) }
        do {
            for step in 1...settings.maxSteps {
                // A shutdown stops the update between steps; the jobs are retried elsewhere.
                try Task.checkCancellation()
                var batch: [TrainingSequence] = []
                for i in 0..<min(settings.batchSize, order.count) {
                    batch.append(newSequences[order[((step - 1) * settings.batchSize + i) % order.count]])
                }
                let replayCount = Int((Double(batch.count) * settings.replayRatio).rounded())
                let fromBuffer = bufferSequences.isEmpty ? 0 : replayCount / 2
                for _ in 0..<fromBuffer { batch.append(bufferSequences[Int(random.next() % UInt64(bufferSequences.count))]) }
                for _ in fromBuffer..<replayCount { batch.append(anchorSequences[Int(random.next() % UInt64(anchorSequences.count))]) }
                let neighbourCount = min(settings.neighbourReplay, neighbours.count)
                for j in 0..<neighbourCount { batch.append(neighbours[((step - 1) * neighbourCount + j) % neighbours.count]) }
                batch += repair
                let report = try await timed(&training) { try await compute.run(.learning) { [batch] in try trainer.trainer.step(batch) } }
                progress(report)
                curve.append(CurvePoint(step: step, loss: report.loss, gradNorm: report.gradNorm, learningRate: report.learningRate))
                firstLoss = firstLoss ?? report.loss
                lastLoss = report.loss
                steps = step
                if probes.isEmpty {
                    if step >= settings.minSteps { break }
                    continue
                }
                if passedAt == nil, let (checked, check) = pending {
                    pending = nil
                    if record(try await timed(&checking, { try await check.value }), after: checked) { passedAt = checked }
                }
                if let passedAt {
                    if step >= passedAt + settings.settleSteps { break }
                } else if step >= nextCheck {
                    let adapter = trainer.trainer.adapter
                    let check = Task { try await passes(probes, served: served.candidate(adapter)) }
                    guard settings.settleSteps == 0 else { pending = (step, check); continue }
                    if record(try await timed(&checking, { try await check.value }), after: step) {
                        passedAt = step
                        break
                    }
                }
            }
        } catch let error as TrainingError {
            throw TrainingFailure(error: error, steps: steps)
        }
        return TrainingRun(adapter: trainer.trainer.adapter, steps: steps, passedAt: passedAt, firstLoss: firstLoss ?? 0,
                           lastLoss: lastLoss, curve: curve, training: training, checking: checking)
    }

    /// The step whose adapter is checked next after `step`'s check passed `passed` of
    /// `checks` probes: the next step, or the one after while fewer than half pass.
    static func nextCheck(after step: Int, passed: Int, of checks: Int) -> Int {
        2 * passed < checks ? step + 2 : step + 1
    }

    /// Whether each probe's greedy answer passes its verifier with `served`'s shards.
    func passes(_ probes: [Probe], served: AdapterShards) async throws -> [Bool] {
        guard !probes.isEmpty else { return [] }
        let answers = try await routed(probes.map { SampleRequest(messages: $0.messages, maxTokens: $0.maxTokens) }, served: served)
        return zip(probes, answers).map { $0.verifier.check($1).passed }
    }

    /// The answers to `requests` as served: each by the shard of `served` that answers it,
    /// or by the base model, whose answer `known` may already hold (a greedy answer of the
    /// same length). One batch per shard, all running together.
    /// With `remembered`, a shard's greedy answers (one user message each, which is all the
    /// locality prompts are) come from earlier gates where they were made, and new ones are kept.
    func routed(_ requests: [SampleRequest], served: AdapterShards, known: (SampleRequest) -> String? = { _ in nil },
                remembered: ShardAnswers? = nil) async throws -> [String] {
        try await Self.routed(requests, served: served, sampler: sampler, known: known, remembered: remembered)
    }

    /// `routed` with the sampler given (tests call it with a scripted one).
    static func routed(_ requests: [SampleRequest], served: AdapterShards, sampler: TextSampler,
                       known: (SampleRequest) -> String? = { _ in nil }, remembered: ShardAnswers? = nil) async throws -> [String] {
        let routes = requests.map { served.route($0.messages) }
        var answers = zip(requests, routes).map { $1 == nil ? known($0) : nil }
        let cacheable = { (r: SampleRequest) in remembered != nil && r.temperature == 0 && r.messages.count == 1 }
        let key = { (r: SampleRequest) in "\(r.maxTokens) \(r.messages[0].role): \(r.messages[0].content)" }
        var recalled: [Int: [String: String]] = [:]
        for i in requests.indices where answers[i] == nil && cacheable(requests[i]) {
            guard let route = routes[i], let remembered else { continue }
            if recalled[route] == nil { recalled[route] = remembered.answers(of: served.shards[route].weights) }
            answers[i] = recalled[route]?[key(requests[i])]
        }
        let groups = Dictionary(grouping: requests.indices.filter { answers[$0] == nil }) { routes[$0] ?? -1 }
        try await withThrowingTaskGroup(of: ([Int], [String]).self) { group in
            for (route, indices) in groups {
                let adapter = route < 0 ? nil : served.shards[route].weights
                let batch = indices.map { requests[$0] }
                group.addTask { (indices, try await sampler.complete(batch, adapter: adapter)) }
            }
            for try await (indices, texts) in group {
                for (i, text) in zip(indices, texts) { answers[i] = text }
                let route = routes[indices[0]] ?? -1
                let kept = indices.filter { cacheable(requests[$0]) }
                if route >= 0, let remembered, !kept.isEmpty {
                    remembered.remember(Dictionary(kept.map { (key(requests[$0]), answers[$0]!) }) { a, _ in a },
                                        of: served.shards[route].weights)
                }
            }
        }
        return answers.map { $0 ?? "" }
    }
}

/// The trainer crosses from the update's task to the thread that runs a step; the update
/// awaits each step before touching it again, so only one thread uses it at a time.
final class TrainerHandle: @unchecked Sendable {
    let trainer: LoRATrainer
    init(_ trainer: LoRATrainer) { self.trainer = trainer }
}
