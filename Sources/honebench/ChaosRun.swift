import BuiltTools
import Foundation
import GGUF
import JSON
import Logging
import Postgres
import Registry
import Synchronization
import Tensor

/// The faults of `honebench chaos`, how the harness waits for recovery, and the invariants
/// it checks after each trial.
final class ChaosRun: Sendable {
    let world: ChaosWorld
    let pool: PostgresPool
    let registry: Registry
    let logger: Logger
    /// Corrections submitted so far (they are numbered by it).
    private let submitted = Mutex<Int>(0)
    /// Versions the harness corrupted (never activated again).
    private let corruptedVersions = Mutex<Set<Int>>([])
    private var corrupted: Set<Int> { corruptedVersions.withLock { $0 } }

    init(world: ChaosWorld, logger: Logger) async throws {
        self.world = world
        self.logger = logger
        pool = PostgresPool(conninfo: world.url, size: 2, logger: logger)
        registry = Registry(pool: pool)
        try await retrying { _ = try await pool.query("SELECT hone.create_adapter(\(Chaos.adapter), \(Chaos.settings)::jsonb, 'chaos harness')") }
        // The base model's references, when this machine made them before (the learner tests
        // and earlier runs keep them); else the first update makes them, and they are kept.
        let model = ProcessInfo.processInfo.environment["HONE_MODEL"].flatMap { try? GGUFFile(path: $0).sha256 }
        let file = model.map { BuiltTool.referencesFile(modelSHA256: $0) }
        if let file { try await registry.importReferences(fromFile: file) }
        // Warm-up: the adapter has a version to serve before the clients start.
        try await submit(1)
        try await waitFor("the first learner to store the base references", timeout: .seconds(900)) {
            try await pool.query("SELECT count(*) AS n FROM hone.reference_targets")[0].decode("n", as: Int.self) == 2
        }
        try await world.startSecondLearner()
        let warm = try await settle(timeout: .seconds(900))
        guard warm.isEmpty else { throw BenchError(message: "warm-up failed: \(warm)") }
        if let file, let model { try await registry.keepReferences(baseModelSHA256: model, atFile: file) }
    }

    // MARK: Faults

    func inject(_ fault: Chaos.Fault, random: inout SeededRandom, load: ChaosLoad) async throws -> FaultReport {
        switch fault {
        case .killLearner:
            try await submit(1 + Int(random.unit() * 2))
            let phase = Chaos.learnerPhases[Int(random.unit() * Float(Chaos.learnerPhases.count)) % Chaos.learnerPhases.count]
            guard let learner = try await learnerIn([phase], timeout: .seconds(120)) else {
                return FaultReport(detail: "no learner reached \(phase) within 120 s; nothing killed")
            }
            learner.send(SIGKILL)
            try learner.start()
            try await learner.ready()
            return FaultReport(detail: "SIGKILL \(learner.name) in \(phase)")

        case .killServer:
            let before = try await newestVersion()
            try await submit(1)
            try await waitFor("a new version", timeout: .seconds(300)) { try await newestVersion() > before }
            load.serverDown.store(true, ordering: .relaxed)
            world.server.send(SIGKILL)
            try world.server.start()
            try await world.server.ready()
            load.serverDown.store(false, ordering: .relaxed)
            return FaultReport(detail: "SIGKILL server as v\(before + 1) was recorded")

        case .postgresFast, .postgresImmediate:
            try await submit(2)
            let delay = Double(random.unit()) * 6
            try await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            let phases = world.learners.compactMap { $0.phase() }
            let down = 2 + Double(random.unit()) * 4
            try world.cluster.stop(logger: logger, mode: fault == .postgresFast ? .fast : .immediate)
            try await Task.sleep(for: .milliseconds(Int(down * 1000)))
            try world.cluster.start(logger: logger)
            return FaultReport(detail: String(format: "down %.1f s, learners were %@", down, phases.joined(separator: "/")))

        case .listenKill:
            try await submit(1)
            let killed: Int = try await pool.query("""
                SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
                WHERE datname = 'hone' AND application_name = \(PostgresListener.applicationName)
                """)[0].decode("n")
            // An operator's rollback must still reach every replica (notification or poll).
            let active = try await activeVersion()
            let target = try await registry.versions(of: Chaos.adapter).first {
                $0.status == "accepted" && $0.version < (active ?? 0) && !corrupted.contains($0.version)
            }
            guard let target else { return FaultReport(detail: "terminated \(killed) LISTEN sessions; no version to roll back to") }
            let started = ContinuousClock.now
            try await retrying {
                _ = try await pool.query("SELECT hone.activate_version(\(Chaos.adapter), \(target.version), 'rollback', 'chaos: rollback after LISTEN kill')")
            }
            var report = FaultReport(detail: "terminated \(killed) LISTEN sessions; rollback to v\(target.version)")
            do {
                try await waitFor("every replica to serve v\(target.version)", timeout: .seconds(30)) {
                    world.replicas.allSatisfy { $0.fingerprint(Chaos.model) == "\(Chaos.adapter)@v\(target.version)" }
                }
                report.detail += String(format: " served everywhere in %.1f s", (ContinuousClock.now - started) / .seconds(1))
            } catch {
                report.violations.append("rollback after LISTEN kill: \(error)")
            }
            return report

        case .freezeLearner:
            try await submit(2)
            guard let frozen = try await learnerIn(["training", "gate"], timeout: .seconds(120)) else {
                return FaultReport(detail: "no learner reached training within 120 s; nothing frozen")
            }
            let other = world.learners.first { $0 !== frozen }!
            frozen.send(SIGSTOP)
            let started = ContinuousClock.now
            // The other learner must take the frozen one's jobs over: its lease expires, the
            // adapter's lock session ends, and the jobs run again elsewhere.
            var report = FaultReport(detail: "SIGSTOP \(frozen.name)")
            do {
                try await waitFor("\(other.name) to finish the frozen learner's jobs", timeout: .seconds(240)) { try await unfinished() == 0 }
                report.detail += String(format: "; %@ took over, all submissions ended in %.1f s", other.name, (ContinuousClock.now - started) / .seconds(1))
            } catch {
                report.violations.append("no takeover while \(frozen.name) was frozen: \(error)")
            }
            let newest = try await newestVersion()
            frozen.send(SIGCONT)
            // Give the woken learner time to try to finish its stale update.
            try await Task.sleep(for: .seconds(Double(ChaosWorld.leaseSeconds) * 2))
            let stale = try await pool.query("""
                SELECT version FROM hone.model_versions WHERE adapter = \(Chaos.adapter) AND version > \(newest)
                """)
            report.detail += "; woke, \(stale.count) version(s) recorded after"
            return report

        case .diskFull:
            guard world.disk != nil else { return FaultReport(detail: "skipped: no tmpfs could be mounted") }
            try await submit(2)
            let filled = world.fillDisk()
            let held = 5 + Double(random.unit()) * 5
            try await Task.sleep(for: .milliseconds(Int(held * 1000)))
            let running = world.cluster.isRunning
            world.freeDisk()
            // A supervisor (systemd, the container runtime) restarts a server that stopped.
            if !world.cluster.isRunning { try world.cluster.start(logger: logger) }
            return FaultReport(detail: String(format: "filled %d MB for %.1f s; PostgreSQL %@", filled >> 20, held, running ? "kept running" : "stopped and was restarted"))

        case .corruptBlob:
            // A version no replica has loaded yet (replicas keep recent versions in memory,
            // verified when loaded): a copy of the active one, its blob damaged on the way to
            // the database but its sha256 the original's, then activated by an operator.
            guard let active = try await activeVersion() else { return FaultReport(detail: "skipped: no active version") }
            let target: Int = try await retrying {
                try await pool.query("""
                    INSERT INTO hone.model_versions (adapter, version, parent_version, status, base_model_sha256, blob, blob_sha256,
                                                     metrics, job_ids, examples, reason)
                    SELECT adapter, (SELECT max(version) + 1 FROM hone.model_versions WHERE adapter = \(Chaos.adapter)), version,
                           'accepted', base_model_sha256, overlay(blob PLACING '\\xdeadbeef'::bytea FROM 200 FOR 4), blob_sha256,
                           '{}'::jsonb, '{}'::bigint[], 0, 'chaos: v' || version || ' with 4 bytes overwritten'
                    FROM hone.model_versions WHERE adapter = \(Chaos.adapter) AND version = \(active)
                    RETURNING version
                    """)[0].decode("version")
            }
            corruptedVersions.withLock { _ = $0.insert(target) }
            let refusals = world.server.metric("hone_version_refusals_total") ?? 0
            try await retrying {
                _ = try await pool.query("SELECT hone.activate_version(\(Chaos.adapter), \(target), 'activate', 'chaos: a corrupted blob')")
            }
            var report = FaultReport(detail: "v\(target): a damaged copy of v\(active), activated")
            do {
                try await waitFor("the server to refuse v\(target)", timeout: .seconds(30)) {
                    (world.server.metric("hone_version_refusals_total") ?? 0) > refusals
                }
            } catch {
                report.violations.append("corrupted v\(target) was not refused: \(error)")
            }
            let served = world.server.fingerprint(Chaos.model)
            if served != "\(Chaos.adapter)@v\(active)" {
                report.violations.append("after refusing v\(target) the server served \(served ?? "nothing"), not v\(active)")
            }
            // The operator puts the good version back.
            try await retrying {
                _ = try await pool.query("SELECT hone.activate_version(\(Chaos.adapter), \(active), 'rollback', 'chaos: back from the corrupted blob')")
            }
            report.detail += "; refused, v\(active) kept serving"
            return report

        case .crashingPayload:
            try await submit(1, poison: true)
            try await submit(2)
            return FaultReport(detail: "one payload that crashes the learner, with 2 others")
        }
    }

    // MARK: Recovery

    /// Waits, restarting learners that died (as a supervisor would), until every submission
    /// has ended, no job of the adapter is waiting or running, and every replica serves the
    /// active version. Returns what did not happen in time.
    func settle(timeout: Duration = .seconds(600)) async throws -> [String] {
        var problems: [String] = []
        do {
            try await waitFor("every submission to end and every replica to serve the active version", timeout: timeout) {
                for learner in world.learners {
                    if let status = learner.exited() {
                        // Only the failpoint may end a learner; anything else is a crash to report.
                        if !learner.log().contains("failpoint HONE_FAILPOINT_CRASH") { problems.append("\(learner.name) exited by itself (status \(status)): \(learner.logTail())") }
                        try learner.start()
                        try await learner.ready()
                    }
                }
                guard try await unfinished() == 0 else { return false }
                let active = try await activeVersion()
                let expected = "\(Chaos.adapter)@" + (active.map { "v\($0)" } ?? "base")
                return world.replicas.allSatisfy { $0.fingerprint(Chaos.model) == expected }
            }
        } catch {
            problems.append("\(error) (unfinished: \((try? await unfinished()) ?? -1))")
        }
        return problems
    }

    /// Submissions without an outcome, and jobs of the adapter not yet final.
    func unfinished() async throws -> Int {
        try await pool.query("""
            SELECT (SELECT count(*) FROM hone.feedback WHERE adapter = \(Chaos.adapter) AND outcome IS NULL)
                 + (SELECT count(*) FROM hone.jobs WHERE adapter = \(Chaos.adapter) AND state NOT IN ('completed', 'discarded', 'cancelled')) AS n
            """)[0].decode("n")
    }

    // MARK: Invariants

    /// The invariants, each a query over the database or a question to the replicas.
    func check(load: ChaosLoad) async throws -> [String] {
        var broken: [String] = []
        let marker = ChaosWorld.crashMarker
        // 1. Every submission ended trained, dropped, blocked or rejected, with a reason when
        //    not trained; only the crashing payloads failed (their attempts used up).
        for row in try await pool.query("""
            SELECT id, outcome, outcome_reason, prompt LIKE '%' || \(marker) || '%' AS poison FROM hone.feedback
            WHERE adapter = \(Chaos.adapter) AND (
                (prompt NOT LIKE '%' || \(marker) || '%' AND outcome NOT IN ('trained', 'dropped', 'blocked', 'rejected'))
                OR (prompt LIKE '%' || \(marker) || '%' AND outcome <> 'failed')
                OR (outcome <> 'trained' AND coalesce(outcome_reason, '') = ''))
            """) {
            broken.append("feedback \(try row.decode("id", as: Int64.self)) ended \(try row.decodeIfPresent("outcome", as: String.self) ?? "nowhere"): \(try row.decodeIfPresent("outcome_reason", as: String.self) ?? "no reason")")
        }
        // 2. No job is part of two versions; versions are numbered without gaps.
        let twice: Int = try await pool.query("""
            SELECT count(*) AS n FROM (SELECT j FROM hone.model_versions, unnest(job_ids) AS j GROUP BY j HAVING count(*) > 1) d
            """)[0].decode("n")
        if twice > 0 { broken.append("\(twice) jobs are in two versions") }
        let versions = try await registry.versions(of: Chaos.adapter).map(\.version)
        if !versions.isEmpty && versions != Array((1...versions.count).reversed()) { broken.append("versions have gaps: \(versions)") }
        // 3. The active version's blob matches its sha256 (and, below, every replica loaded it).
        let whole: Bool = try await pool.query("""
            SELECT coalesce(bool_and(encode(sha256(v.blob), 'hex') = v.blob_sha256), true) AS ok
            FROM hone.adapters a JOIN hone.model_versions v ON v.adapter = a.name AND v.version = a.active_version
            WHERE a.name = \(Chaos.adapter)
            """)[0].decode("ok")
        if !whole { broken.append("the active version's blob does not match its sha256") }
        // 4. Every publish went on top of the version active at the time: nothing published
        //    over a newer leader or an operator's rollback.
        for row in try await pool.query("""
            SELECT e.to_version, e.from_version, v.parent_version FROM hone.adapter_events e
            JOIN hone.model_versions v ON v.adapter = e.adapter AND v.version = e.to_version
            WHERE e.adapter = \(Chaos.adapter) AND e.action = 'publish' AND e.from_version IS DISTINCT FROM v.parent_version
            """) {
            broken.append("v\(try row.decode("to_version", as: Int.self)) was published over v\(try row.decodeIfPresent("from_version", as: Int.self) ?? 0) but trained on v\(try row.decodeIfPresent("parent_version", as: Int.self) ?? 0)")
        }
        // 5. No job is left running past its lease.
        let stuck: Int = try await pool.query("""
            SELECT count(*) AS n FROM hone.jobs WHERE state = 'running' AND lease_expires_at < now() - interval '30 seconds'
            """)[0].decode("n")
        if stuck > 0 { broken.append("\(stuck) jobs running past their lease") }
        // 6. Serving answered throughout, database outages included.
        let failed = load.tally.withLock { t -> [String] in defer { t.failed = [] }; return t.failed }
        if !failed.isEmpty { broken.append("\(failed.count) requests failed while the server was up: \(failed.prefix(2).joined(separator: " | "))") }
        return broken
    }

    struct Summary {
        var submissions: Int
        var outcomes: String
        var versions: Int
    }

    func summary() async throws -> Summary {
        let rows = try await pool.query("SELECT outcome, count(*) AS n FROM hone.feedback WHERE adapter = \(Chaos.adapter) GROUP BY 1 ORDER BY 1")
        let pairs = try rows.map { (try $0.decodeIfPresent("outcome", as: String.self) ?? "none", try $0.decode("n", as: Int.self)) }
        return Summary(submissions: pairs.reduce(0) { $0 + $1.1 }, outcomes: pairs.map { "\($0.0) \($0.1)" }.joined(separator: ", "),
                       versions: try await registry.versions(of: Chaos.adapter).count)
    }

    // MARK: Helpers

    /// Inserts `count` corrections as an application does, retrying while the database is
    /// away. A `poison` one carries the failpoint's text; its attempts are cut to 3 (from the
    /// kind's 5) to keep the trial short.
    func submit(_ count: Int, poison: Bool = false) async throws {
        let numbers = submitted.withLock { n -> [Int] in defer { n += count }; return Array(n + 1...n + count) }
        let prompts = numbers.map { "Name item \($0)\(poison ? " " + ChaosWorld.crashMarker : "")." }
        try await retrying {
            try await pool.transaction { tx in
                let ids: [Int64] = try await tx.query("""
                    INSERT INTO hone.feedback (adapter, prompt, response, rating)
                    SELECT \(Chaos.adapter), p, 'It is called Widget-' || n || '.', 1
                    FROM unnest(\(prompts)::text[], \(numbers)::integer[]) AS t(p, n)
                    RETURNING job_id
                    """).map { try $0.decode("job_id") }
                if poison { try await tx.query("UPDATE hone.jobs SET max_attempts = 3 WHERE id = ANY(\(ids)::bigint[])") }
            }
        }
    }

    func activeVersion() async throws -> Int? {
        try await retrying { try await registry.adapter(Chaos.adapter)?.activeVersion }
    }

    func newestVersion() async throws -> Int {
        try await retrying { try await registry.versions(of: Chaos.adapter).first?.version ?? 0 }
    }

    /// The learner in one of `phases`, polled every 50 ms; nil when none gets there in time.
    func learnerIn(_ phases: [String], timeout: Duration) async throws -> ChaosWorld.Replica? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let learner = world.learners.first(where: { $0.phase().map(phases.contains) ?? false }) { return learner }
            try await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Runs `body` until it succeeds, for up to two minutes: the database may be restarting.
    func retrying<T>(_ body: () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(120)
        while true {
            do { return try await body() } catch where ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    func waitFor(_ what: String, timeout: Duration, _ done: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await done()) == true { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw BenchError(message: "timed out after \(timeout) waiting for \(what)")
    }
}
