import Foundation
import Logging
import Postgres
import Registry
import Synchronization
import Tensor

/// `honebench chaos` (`ops/chaos --trials N`; a short run in `ops/test`): replicas of this
/// build's `honed` on a private PostgreSQL, serving streaming and non-streaming clients while
/// corrections keep arriving, and one fault injected per trial (`Fault`, in turn, in an
/// order shuffled by HONE_CHAOS_SEED). After each fault the harness waits until every
/// submission has ended and every replica serves the active version, with no operator's
/// help, and then checks the invariants (`Chaos.check`). One JSON line per trial, a summary
/// line, and exit status 1 when any invariant broke.
///
/// HONE_CHAOS_TRIALS (10), HONE_CHAOS_SEED (1), HONE_CHAOS_FAULTS (a comma-separated subset).
enum Chaos {
    enum Fault: String, CaseIterable {
        /// SIGKILL of the learner doing an update, in a chosen phase.
        case killLearner = "kill-learner"
        /// SIGKILL of the serving replica right after a version was recorded (while it swaps).
        case killServer = "kill-server"
        /// PostgreSQL stopped (fast shutdown) and started again a few seconds later.
        case postgresFast = "postgres-fast"
        /// PostgreSQL stopped as in a crash (immediate shutdown) and started again.
        case postgresImmediate = "postgres-immediate"
        /// Every replica's LISTEN connection terminated, then an operator rollback.
        case listenKill = "listen-kill"
        /// The learner doing an update frozen (SIGSTOP) past its lease, then resumed.
        case freezeLearner = "freeze-learner"
        /// The disk under the database full for a while.
        case diskFull = "disk-full"
        /// A version blob corrupted in the database, then activated by an operator.
        case corruptBlob = "corrupt-blob"
        /// A correction whose payload makes the learner crash on every attempt.
        case crashingPayload = "crashing-payload"
    }

    static let adapter = "chaos"
    static let model = "smollm2:chaos"
    /// Cheap updates (2 steps, rank 4) and a small gate that accepts them (8 general
    /// locality prompts, 4 earlier corrections; its full size made the gate 85–90% of each
    /// update): the faults are the subject, and the learner tests judge learning.
    static let settings = #"""
        {"rank": 4, "alpha": 8, "min_steps": 2, "max_steps": 2, "max_nll_rise": 100, "max_kl": 100, "locality_prompts": 8, "history_probes": 4}
        """#
    static let learnerPhases = ["examples", "training", "gate", "recording"]

    static func run(logger: Logger) async throws {
        let env = ProcessInfo.processInfo.environment
        let trials = Int(env["HONE_CHAOS_TRIALS"] ?? "10") ?? 10
        var random = SeededRandom(seed: UInt64(env["HONE_CHAOS_SEED"] ?? "1") ?? 1)
        let chosen = try env["HONE_CHAOS_FAULTS"].flatMap { $0.isEmpty ? nil : $0 }.map { list in
            try list.split(separator: ",").map { name in
                guard let fault = Fault(rawValue: String(name)) else { throw BenchError(message: "unknown fault \(name) (known: \(Fault.allCases.map(\.rawValue)))") }
                return fault
            }
        } ?? Fault.allCases
        let world = try await ChaosWorld(logger: logger)
        // Torn down explicitly, not by defer: exit(1) below skips defers.
        let violations: Int
        do { violations = try await runTrials(count: trials, faults: chosen, random: &random, world: world, logger: logger) } catch {
            world.tearDown()
            throw error
        }
        world.tearDown()
        if violations > 0 { exit(1) }
    }

    /// Runs the trials; returns how many invariants broke.
    static func runTrials(count trials: Int, faults chosen: [Fault], random: inout SeededRandom, world: ChaosWorld,
                       logger: Logger) async throws -> Int {
        let run = try await ChaosRun(world: world, logger: logger)
        let load = ChaosLoad(port: world.server.port)
        let clients = Task { await load.run() }

        var order: [Fault] = []
        var counts: [String: Int] = [:]
        var violations = 0
        for trial in 0..<trials {
            if order.isEmpty { order = chosen.shuffled(using: &random) }
            let fault = order.removeFirst()
            let started = ContinuousClock.now
            var report = try await run.inject(fault, random: &random, load: load)
            let settled = ContinuousClock.now
            report.violations += try await run.settle()
            report.violations += try await run.check(load: load)
            counts[fault.rawValue, default: 0] += 1
            violations += report.violations.count
            emit(["bench": "chaos", "trial": trial + 1, "fault": fault.rawValue, "detail": report.detail,
                  "fault_s": (settled - started) / .seconds(1), "recovery_s": (ContinuousClock.now - settled) / .seconds(1),
                  "violations": report.violations.isEmpty ? "none" : report.violations.joined(separator: "; ")])
        }
        load.stop.store(true, ordering: .relaxed)
        await clients.value
        let summary = try await run.summary()
        let requests = load.tally.withLock { $0 }
        emit(["bench": "chaos_summary", "trials": trials,
              "faults": counts.keys.sorted().map { "\($0) \(counts[$0]!)" }.joined(separator: ", "),
              "violations": violations, "submissions": summary.submissions, "outcomes": summary.outcomes,
              "versions": summary.versions, "requests_ok": requests.ok, "requests_failed_while_server_down": requests.excused,
              "requests_failed": requests.failed.count, "configuration": ChaosWorld.configuration])
        return violations
    }
}

/// What one fault did: a line for the report, and broken invariants.
struct FaultReport {
    var detail: String
    var violations: [String] = []
}

/// Clients of the serving replica, streaming and not, on the base model and the adapter,
/// with half a second between requests (learning needs some of the two cores). A failure
/// while the harness had the serving replica down is excused; any other is a violation.
final class ChaosLoad: Sendable {
    let port: Int
    let stop = Atomic<Bool>(false)
    let serverDown = Atomic<Bool>(false)
    let tally = Mutex<(ok: Int, excused: Int, failed: [String])>((0, 0, []))

    init(port: Int) { self.port = port }

    func run() async {
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<2 {
                group.addTask { [self] in
                    _ = try? await Parallel.onThread { [self] in
                        var n = 0
                        while !stop.load(ordering: .relaxed) {
                            n += 1
                            let model = n % 2 == 0 ? Chaos.model : "smollm2"
                            let down = serverDown.load(ordering: .relaxed)
                            do {
                                if client == 0 {
                                    _ = try ServeBench.stream(port: port, model: model, prompt: "Name a fruit.", origin: .now)
                                } else {
                                    _ = try ServeBench.chat(port: port, model: model, prompt: "Say hello.", maxTokens: 8)
                                }
                                tally.withLock { $0.ok += 1 }
                            } catch {
                                let excused = down || serverDown.load(ordering: .relaxed)
                                tally.withLock { if excused { $0.excused += 1 } else { $0.failed.append("\(model): \(error)") } }
                            }
                            usleep(500_000)
                        }
                    }
                }
            }
        }
    }
}
