import Foundation
import Generation
import Hashing
import JSON
import Learning
import Llama
import Logging
import Postgres
import Queue
import Registry
import Server
import ServiceLifecycle
import Tensor
import Tokenizer
import Training

/// The learner: for each adapter with work, on one replica at a time (a session advisory
/// lock per adapter), claims a micro-batch of jobs, turns them into verified examples,
/// trains a copy of that adapter, gates it, and records the candidate — in the same
/// transaction that completes the jobs, so a crash anywhere before the commit leaves the
/// jobs to run again and no half-written version behind.
struct LearnerService: Service {
    public struct Configuration: Sendable {
        /// How long to wait for a `hone_jobs` notification before looking for work anyway.
        var pollInterval: Duration = .seconds(2)
        /// Lease of claimed jobs, renewed every third of it while the update runs; nil: the
        /// job kind's (`lease_seconds` in jobs/KIND/kind.json).
        var lease: Duration?
        /// Chaos testing's failpoint (`HONE_FAILPOINT_CRASH`): the process traps while making
        /// examples for a job whose payload contains this text, as a payload that crashes the
        /// example builder would. Nil (always, outside `ops/chaos`): no failpoint.
        var crashMarker: String?

        init(lease: Duration? = nil, crashMarker: String? = nil) {
            self.lease = lease
            self.crashMarker = crashMarker
        }
    }

    static let kinds = ["feedback", "task", "document"]

    let queue: JobQueue
    let registry: Registry
    let catalogue: JobCatalogue
    let holder: SnapshotHolder
    /// Runs the learner's generations (a `.learning` scheduler, not the clients').
    let scheduler: BatchScheduler
    /// Runs the updates' CPU work as learning, behind serving.
    let compute: ComputeScheduler
    let wake: WakeSignal
    let replica: ReplicaIdentity
    /// Where this learner is, for `/status` and `/metrics`.
    let activity: LearnerActivity
    let configuration: Configuration
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while holder.snapshot == nil && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(100)) }
            guard let snapshot = holder.snapshot else { return }
            var references: BaseReferences?
            while !Task.isCancelled {
                var worked = false
                do {
                    for adapter in try await adaptersWithWork() {
                        if references == nil {
                            let started = ContinuousClock.now
                            activity.enter(.references)
                            defer { activity.enter(.idle) }
                            references = try await loadReferences(snapshot)
                            logger.info("base references ready", metadata: ["seconds": "\((ContinuousClock.now - started) / .seconds(1))"])
                        }
                        // Memory goes back after every update that ran: one that failed or was made
                        // stale leaves as much behind as one that finished.
                        var ran = true
                        defer { if ran { releaseTrainingMemory() } }
                        ran = try await update(adapter, references: references!)
                        worked = worked || ran
                        if Task.isCancelled { return }
                    }
                } catch is CancellationError {
                    return
                } catch {
                    logger.error("learner pass failed; retrying after the poll interval", metadata: ["error": "\(error)"])
                }
                if !worked { await wake.wait(timeout: configuration.pollInterval) }
            }
        }
    }

    /// After an update, the training buffers kept for its next step go back to the kernel:
    /// otherwise the process stays at its training peak between updates and while idle
    /// (measured: 1049 MB before, 351 MB after, release, one 8-correction update). The next
    /// update faults its pages in once; the per-step reuse inside an update is unchanged.
    private func releaseTrainingMemory() {
        let before = ProcessMetrics.current()?.residentBytes ?? 0
        LoRATrainer.releaseFreedMemory()
        let after = ProcessMetrics.current()?.residentBytes ?? 0
        let heap = ProcessMetrics.heapUsage()
        logger.info("learner: training memory returned", metadata: [
            "rss_mb_before": "\(Int(before / 1_048_576))", "rss_mb_after": "\(Int(after / 1_048_576))",
            "heap_in_use_mb": "\(Int((heap?.inUse ?? 0) / 1_048_576))", "heap_free_mb": "\(Int((heap?.free ?? 0) / 1_048_576))"])
    }

    /// What every update of this base model compares against: the anchors (replayed and
    /// measured for drift) and the locality set (answers a candidate must keep).
    struct BaseReferences: Sendable {
        var anchors: AnchorSet
        var locality: LocalitySet
        /// Shards' locality answers from earlier gates on this base model.
        let shardAnswers = ShardAnswers()
    }

    /// The base model's answers to the anchor and locality prompts: from the database when a
    /// learner made them before (any replica), else generated now and stored; the first
    /// writer's are kept.
    func loadReferences(_ snapshot: ModelSnapshot) async throws -> BaseReferences {
        let sampler = SchedulerSampler(scheduler: scheduler, snapshot: snapshot)
        let anchorAnswers = try await baseAnswers(AnchorSet.prompts, snapshot: snapshot) { try await AnchorSet.answers(sampler: sampler) }
        let localityAnswers = try await baseAnswers(LocalitySet.prompts, snapshot: snapshot) { try await LocalitySet.answers(sampler: sampler) }
        let anchors = AnchorSet(answers: anchorAnswers, tokenizer: snapshot.tokenizer)
        let locality = LocalitySet(answers: localityAnswers, tokenizer: snapshot.tokenizer)
        let model = snapshot.model
        let sha = model.file.sha256
        // The distilled targets: stored by an earlier start when their inputs are the same.
        let keys = [anchors.distillationInputs, locality.distillationInputs].map { sha256Hex(DistilledTargets.inputBytes($0)) }
        var stored: [String: [UInt8]] = [:]
        for row in try await queue.pool.query("""
            SELECT inputs_sha256, targets FROM hone.reference_targets WHERE base_model_sha256 = \(sha) AND inputs_sha256 = ANY(\(keys)::text[])
            """) {
            stored[try row.decode("inputs_sha256")] = try row.decode("targets", as: Bytea.self).bytes
        }
        let (references, made) = try await compute.run(.learning) { [anchors, locality, stored] in
            var references = BaseReferences(anchors: anchors, locality: locality)
            let made = [try references.anchors.distill(model: model, stored: stored[keys[0]]),
                        try references.locality.distill(model: model, stored: stored[keys[1]])]
            return (references, zip(keys, made).compactMap { key, bytes in bytes.map { (key, $0) } })
        }
        for (key, bytes) in made {
            try await queue.pool.query("""
                INSERT INTO hone.reference_targets (base_model_sha256, inputs_sha256, targets)
                VALUES (\(sha), \(key), \(Bytea(bytes))) ON CONFLICT DO NOTHING
                """)
        }
        return references
    }

    /// The stored base answers to `prompts` (in order), made by `make` and stored when any is missing.
    private func baseAnswers(_ prompts: [String], snapshot: ModelSnapshot, make: () async throws -> [String]) async throws -> [String] {
        let sha = snapshot.model.file.sha256
        func stored() async throws -> [String: String] {
            var out: [String: String] = [:]
            for row in try await queue.pool.query("""
                SELECT prompt, answer FROM hone.anchor_answers WHERE base_model_sha256 = \(sha) AND prompt = ANY(\(prompts)::text[])
                """) {
                out[try row.decode("prompt")] = try row.decode("answer")
            }
            return out
        }
        var answers = try await stored()
        if prompts.contains(where: { answers[$0] == nil }) {
            let made = try await make()
            try await queue.pool.query("""
                INSERT INTO hone.anchor_answers (base_model_sha256, prompt, answer)
                SELECT \(sha), p, a FROM unnest(\(prompts)::text[], \(made)::text[]) AS t(p, a)
                ON CONFLICT DO NOTHING
                """)
            answers = try await stored()
        }
        return prompts.map { answers[$0] ?? "" }
    }

    /// Adapters, not paused, with claimable learning jobs.
    func adaptersWithWork() async throws -> [String] {
        try await queue.pool.query("""
            SELECT DISTINCT j.adapter FROM hone.jobs j JOIN hone.adapters a ON a.name = j.adapter
            WHERE j.state = 'available' AND j.scheduled_at <= now() AND j.kind = ANY(\(Self.kinds)::text[]) AND NOT a.paused
            ORDER BY 1
            """).map { try $0.decode("adapter") }
    }

    /// One update of `adapter` if this replica gets its lock; true when jobs were handled.
    func update(_ adapter: String, references: BaseReferences) async throws -> Bool {
        try await queue.pool.withConnection { connection in
            let key = "hone learner \(adapter)"
            let locked: Bool = try await connection.query("SELECT pg_try_advisory_lock(hashtextextended(\(key), 0)) AS locked")[0].decode("locked")
            guard locked else { return false }
            // The lock is this session's: the server ends the session (and so frees the lock
            // for another replica) once it sits idle for a lease. The update's heartbeat pings
            // it; a replica frozen past its lease loses the adapter and, when it wakes, finds
            // its session gone and its jobs' leases taken: it can no longer publish.
            try await connection.query("SELECT set_config('idle_session_timeout', \(String(Int(idleLimit / .milliseconds(1)))), false)")
            func unlock() async {
                _ = try? await connection.query("SELECT pg_advisory_unlock(hashtextextended(\(key), 0))")
                _ = try? await connection.query("SELECT set_config('idle_session_timeout', '0', false)")
            }
            do {
                let worked = try await updateLocked(adapter, references: references, connection: connection)
                await unlock()
                return worked
            } catch {
                await unlock()
                throw error
            }
        }
    }

    /// How long the lock's session may sit idle: the shortest lease an update may hold.
    private var idleLimit: Duration {
        configuration.lease ?? .seconds(catalogue.kinds.values.map(\.leaseSeconds).min() ?? 60)
    }

    private func updateLocked(_ adapter: String, references: BaseReferences, connection: PostgresConnection) async throws -> Bool {
        guard let record = try await registry.adapter(adapter, on: connection), !record.paused else { return false }
        // One kind per update, the kind of the job first in line: its batch size and lease
        // come from the catalogue (a document is bigger work than a correction).
        guard let next = try await queue.next(kinds: Self.kinds, adapter: adapter), let kind = catalogue.kinds[next.kind] else { return false }
        let lease = configuration.lease ?? .milliseconds(Int64(kind.leaseSeconds * 1000))
        // A job tried before runs alone: one that kills the process cannot fail its batch-mates.
        let jobs = try await queue.claim(limit: kind.batchSize, worker: replica.id, kinds: [kind.name], adapter: adapter,
                                         lease: lease, retriesAlone: true)
        guard !jobs.isEmpty else { return false }
        var log = logger
        log[metadataKey: "adapter.name"] = "\(adapter)"
        log.info("learning update started", metadata: ["jobs": "\(jobs.map(\.id))"])
        let started = ContinuousClock.now
        activity.enter(.examples, adapter: adapter, jobs: jobs.count)
        defer { activity.enter(.idle) }
        var valid: [Job] = []
        for job in jobs {
            if let reason = catalogue.rejection(kind: job.kind, payload: job.args) {
                try await queue.discard(job.lease, reason: reason)
            } else {
                valid.append(job)
            }
        }
        guard !valid.isEmpty else { return true }
        let settings: LearningSettings
        do { settings = try LearningSettings(json: record.settings) } catch {
            for job in valid { try await queue.fail(job.lease, error: "adapter \(adapter)'s settings are invalid: \(error)") }
            return true
        }
        // Renew every lease while the update runs; a lost lease abandons the update.
        let claimed = valid, updateLogger = log
        do {
            return try await runUpdate(record, settings: settings, jobs: claimed, lease: lease, references: references,
                                       connection: connection, logger: updateLogger)
        } catch is CancellationError {
            // Shutting down mid-update: the jobs go back to the queue now rather than when
            // their lease runs out. The queries run detached, as this task is cancelled.
            let queue = queue
            await Task.detached {
                for job in claimed { _ = try? await queue.release(job.lease, reason: "released: the replica shut down during the update") }
            }.value
            throw CancellationError()
        } catch let stale as StaleCandidate {
            // An operator changed the active version during the update: the jobs did nothing
            // wrong, so they go back at once and are batched again, on the new version.
            activity.finished(.superseded, seconds: (ContinuousClock.now - started) / .seconds(1), steps: nil)
            for job in claimed { _ = try? await queue.release(job.lease, reason: "released: \(stale)") }
            log.info("learning update abandoned: the active version changed", metadata: ["error": "\(stale)"])
            return true
        } catch {
            activity.finished(.failed, seconds: (ContinuousClock.now - started) / .seconds(1), steps: nil)
            // The attempt failed before its commit: record why and let the backoff retry it
            // (fenced, so jobs whose lease was lost are untouched).
            for job in claimed { _ = try? await queue.fail(job.lease, error: "learning update failed: \(error)") }
            throw error
        }
    }

    /// The update with its leases renewed every third of their length.
    private func runUpdate(_ record: AdapterRecord, settings: LearningSettings, jobs claimed: [Job], lease: Duration,
                           references: BaseReferences, connection: PostgresConnection, logger updateLogger: Logger) async throws -> Bool {
        try await withThrowingTaskGroup(of: Bool?.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: min(lease, idleLimit) / 3)
                    // Keeps the adapter's lock session alive (see `update`; fails when it was ended),
                    // and stops at once an update an operator made stale: the registry would refuse
                    // its candidate at the end anyway.
                    let active = try await registry.adapter(record.name, on: connection)?.activeVersion
                    guard active == record.activeVersion else {
                        throw StaleCandidate(adapter: record.name, parent: record.activeVersion, active: active)
                    }
                    for job in claimed where try await !queue.heartbeat(job.lease, lease: lease) {
                        throw LearnerError("job \(job.id)'s lease was lost (cancelled or rescued); abandoning the update")
                    }
                }
                return nil
            }
            group.addTask {
                try await learn(record, settings: settings, jobs: claimed, references: references, connection: connection, logger: updateLogger)
                return true
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            return true
        }
    }

    private func learn(_ record: AdapterRecord, settings: LearningSettings, jobs: [Job], references: BaseReferences,
                       connection: PostgresConnection, logger: Logger) async throws {
        guard let snapshot = holder.snapshot else { throw LearnerError("no model is loaded") }
        let model = snapshot.model
        var parent = AdapterShards()
        if let version = record.activeVersion {
            parent = try await VersionShards(registry: registry, model: model, compute: compute).load(record.name, version) { id in
                snapshot.adapters[record.name].flatMap { $0.version == id ? $0.shards : nil }
            }
        }
        let sampler = SchedulerSampler(scheduler: scheduler, snapshot: snapshot)
        let builder = ExampleBuilder(sampler: sampler, settings: settings, adapter: parent.general?.weights)
        let planning = ContinuousClock.now
        if let marker = configuration.crashMarker, let job = jobs.first(where: { $0.args.jsonText.contains(marker) }) {
            fatalError("failpoint HONE_FAILPOINT_CRASH: job \(job.id)'s payload contains \(marker)")
        }
        let plans = try await builder.plans(jobs.map { WorkItem(jobID: $0.id, kind: $0.kind, args: $0.args) })
        // The replay buffer: the most recent verified examples, and the first example (the
        // question as asked) of every earlier item, so what was learned long ago is replayed
        // too. The update samples among them with its seed, so the same jobs on the same
        // parent train the same candidate.
        let active = record.activeVersion ?? 0
        func messages(_ rows: PostgresRows) throws -> [[ChatMessage]] {
            try rows.map { try ChatMessage.list(from: JSONValue(parsing: $0.decode("messages", as: JSONText.self).text)) }
        }
        let firstOfEach = try messages(try await queue.pool.query("""
            SELECT DISTINCT ON (e.job_id) e.messages FROM hone.training_examples e
            WHERE e.adapter = \(record.name) AND e.version <= \(active) AND e.job_id IS NOT NULL
            ORDER BY e.job_id, e.id
            """))
        let recent = try messages(try await queue.pool.query("""
            SELECT e.messages FROM hone.training_examples e
            WHERE e.adapter = \(record.name) AND e.version <= \(active)
            ORDER BY e.id DESC LIMIT 64
            """))
        let buffer = recent + firstOfEach.filter { !recent.contains($0) }
        let history = Probe.history(firstOfEach, count: settings.historyProbes)

        let leases = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0.lease) })
        let trainable = plans.filter { $0.skipped == nil }
        guard !trainable.isEmpty else {
            try await finish(plans, leases: leases, version: nil, outcome: nil, connection: connection)
            activity.finished(.nothingToTrain, seconds: (ContinuousClock.now - planning) / .seconds(1), steps: nil)
            logger.info("learning update: nothing to train", metadata: ["jobs": "\(jobs.count)"])
            return
        }
        // The update's own peak: what an operator sizes the machine by (issue #15: ≤ 1 GiB).
        ProcessMetrics.resetPeakResident()
        let update = LearningUpdate(model: model, tokenizer: snapshot.tokenizer, sampler: sampler, settings: settings,
                                    anchors: references.anchors, locality: references.locality, compute: compute,
                                    shardAnswers: references.shardAnswers)
        let examplesSeconds = (ContinuousClock.now - planning) / .seconds(1)
        let activity = activity
        activity.enter(.training, maxSteps: settings.maxSteps)
        var outcome = try await update.run(parent: parent, plans: plans, buffer: buffer, history: history, progress: { report in
            activity.stepped(report.step, loss: report.loss)
            logger.debug("learning step", metadata: ["step": "\(report.step)", "loss": "\(report.loss)", "seconds": "\(report.seconds)"])
        }, stage: { stage in
            switch stage {
            case .training: activity.enter(.training)
            case .gate: activity.enter(.gate)
            }
        })
        activity.enter(.recording)
        outcome.metrics["seconds_examples"] = .double(examplesSeconds)
        if let peak = ProcessMetrics.peakResidentBytes() { outcome.metrics["rss_peak_mb"] = .double((peak / 1_048_576).rounded()) }
        let candidate = VersionCandidate(
            adapter: record.name, parentVersion: record.activeVersion, accepted: outcome.accepted,
            baseModelSHA256: model.file.sha256, blob: outcome.adapter.map { AdapterBlob.encode($0, model: model) },
            metrics: .object(outcome.metrics), jobIDs: trainable.map(\.jobID), examples: outcome.examples.count,
            reason: outcome.reason)
        let version = try await connection.transaction { tx in
            let (version, activated) = try await registry.record(candidate, actor: replica.id, on: tx)
            let curve = outcome.curve
            if !curve.isEmpty {
                try await tx.query("""
                    INSERT INTO hone.version_steps (adapter, version, step, loss, grad_norm, learning_rate, held_out_passed, held_out_checks)
                    SELECT \(record.name), \(version), s, l, g, r, p, c
                    FROM unnest(\(curve.map(\.step))::integer[], \(curve.map(\.loss))::float8[], \(curve.map(\.gradNorm))::float8[],
                                \(curve.map(\.learningRate))::float8[], \(curve.map { $0.heldOut?.passed })::integer[],
                                \(curve.map { $0.heldOut?.checks })::integer[]) AS t(s, l, g, r, p, c)
                    """)
            }
            if outcome.accepted {
                for plan in trainable {
                    for example in plan.examples {
                        try await tx.query("""
                            INSERT INTO hone.training_examples (adapter, version, job_id, messages)
                            VALUES (\(record.name), \(version), \(plan.jobID), \(JSONText(ChatMessage.json(example).jsonText))::jsonb)
                            """)
                    }
                }
            }
            try await finish(plans, leases: leases, version: version, outcome: outcome, connection: tx)
            return (version, activated)
        }
        activity.finished(outcome.accepted ? .accepted : .rejected, seconds: (ContinuousClock.now - planning) / .seconds(1),
                          steps: outcome.metrics["steps"]?.intValue)
        logger.info("learning update recorded", metadata: [
            "adapter.version": "\(VersionRecord.id(adapter: record.name, version: version.0))",
            "accepted": "\(outcome.accepted)", "activated": "\(version.1)", "reason": "\(outcome.reason ?? "")",
            "metrics": "\(JSONValue.object(outcome.metrics).jsonText)"])
    }

    /// Completes every job with its item's outcome; throws (rolling the caller's transaction
    /// back) when any lease was lost, so a job's effect commits only with its completion.
    private func finish(_ plans: [ItemPlan], leases: [Int64: JobLease], version: Int?, outcome: UpdateOutcome?,
                        connection: PostgresConnection) async throws {
        let results: [(lease: JobLease, result: JSONValue?)] = plans.map { plan in
            var result: [String: JSONValue] = ["notes": .object(plan.notes)]
            if let (what, why) = plan.skipped {
                result["outcome"] = .string(what)
                result["reason"] = .string(why)
            } else if let outcome, let version {
                result["outcome"] = .string(outcome.accepted ? "trained" : "rejected")
                result["version"] = .int(version)
                if let item = outcome.items[plan.jobID] {
                    result["held_out"] = .object(["checks": .int(item.checks), "passed_before": .int(item.passedBefore),
                                                  "passed_after": .int(item.passedAfter)])
                    if outcome.accepted { result["learned"] = .string(item.summary) }
                }
                if let reason = outcome.reason { result["reason"] = .string("rejected by the gate: \(reason)") }
            }
            return (leases[plan.jobID]!, .object(result))
        }
        let held = try await queue.complete(results, on: connection)
        guard held.count == results.count else {
            throw LearnerError("\(results.count - held.count) job lease(s) were lost before the commit; nothing is recorded")
        }
    }

}

struct LearnerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
