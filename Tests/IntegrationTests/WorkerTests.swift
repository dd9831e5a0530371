import Foundation
import JSON
import Logging
import Postgres
import Queue
import Synchronization
import Testing

/// Collects what a handler saw, and lets a test await the n-th job (with a deadline, so
/// a broken queue fails the test instead of hanging the suite).
final class Handled: Sendable {
    private struct State {
        var jobs: [Job] = []
        var waiters: [(id: Int, count: Int, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextID = 0
    }
    private let state = Mutex(State())

    func record(_ job: Job) {
        let ready = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.jobs.append(job)
            let count = s.jobs.count
            let done = s.waiters.filter { $0.count <= count }.map(\.continuation)
            s.waiters.removeAll { $0.count <= count }
            return done
        }
        for c in ready { c.resume(returning: true) }
    }

    var jobs: [Job] { state.withLock { $0.jobs } }

    /// Waits until `count` jobs were handled; records a test failure after `timeout`.
    func wait(for count: Int, timeout: Duration = .seconds(60)) async {
        let ok = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let id = state.withLock { s -> Int? in
                if s.jobs.count >= count { return nil }
                s.nextID += 1
                s.waiters.append((s.nextID, count, c))
                return s.nextID
            }
            guard let id else { return c.resume(returning: true) }
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(Int(timeout.components.seconds))) {
                let expired = self.state.withLock { s -> CheckedContinuation<Bool, Never>? in
                    guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return s.waiters.remove(at: i).continuation
                }
                expired?.resume(returning: false)
            }
        }
        #expect(ok, "timed out waiting for \(count) handled jobs (got \(jobs.count))")
    }
}

@Suite("Queue: workers, notifications, poll fallback, catalogue", .timeLimit(.minutes(3)))
struct WorkerTests {
    /// Runs a worker (and its listener, when given a URL to listen on) around `body`.
    func withWorker(queue: JobQueue, listenURL: String?, pollInterval: Duration, kinds: [String]? = ["echo"],
                    wake: WakeSignal = WakeSignal(), handler: @escaping JobWorker.Handler,
                    _ body: (PostgresListener?) async throws -> Void) async throws {
        let listener = listenURL.map {
            PostgresListener(conninfo: $0, channels: ["hone_jobs"], healthCheckInterval: .seconds(1), logger: TestDatabase.logger)
        }
        let worker = JobWorker(queue: queue, catalogue: TestDatabase.catalogue,
                               configuration: .init(name: "test-worker", kinds: kinds, lease: .seconds(30), pollInterval: pollInterval),
                               wake: wake, logger: TestDatabase.logger, handler: handler)
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let listener {
                group.addTask { await listener.run() }
                group.addTask { await wake.follow(listener, channel: "hone_jobs") }
            }
            group.addTask { try await worker.run() }
            defer { group.cancelAll() }
            try await body(listener)
        }
    }

    /// Waits until the listener has connected and LISTENs (its first event).
    func awaitListening(_ url: String, queue: JobQueue) async throws {
        let reached1 = try await TestDatabase.eventually {
            try await queue.pool.query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")[0]
                .decode("n", as: Int.self) > 0
        }
        #expect(reached1, "listener never started listening")
    }

    /// Deterministic on a loaded machine: with a 60 s poll interval, five jobs handled
    /// while no wait of the worker ran out its timeout were each woken by their NOTIFY.
    /// (The latency itself is a benchmark's business; this test only logs it.)
    @Test("a NOTIFY wakes a waiting worker, not its poll (poll interval 60 s)")
    func notifyWakesWorker() async throws {
        try await TestDatabase.withQueue { url, queue in
            let handled = Handled()
            let wake = WakeSignal()
            try await withWorker(queue: queue, listenURL: url, pollInterval: .seconds(60), wake: wake, handler: { job in
                handled.record(job)
                return nil
            }) { _ in
                try await awaitListening(url, queue: queue)
                for i in 1...5 {
                    let sent = ContinuousClock.now
                    try await queue.enqueue(JobRequest(kind: "echo", args: .object(["i": .int(i)])))
                    await handled.wait(for: i)
                    TestDatabase.logger.debug("NOTIFY→handler", metadata: ["job": "\(i)", "latency": "\(ContinuousClock.now - sent)"])
                }
                // The handler returning is not the job's end: the worker still records it.
                let completed = try await TestDatabase.eventually {
                    try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs WHERE state = 'completed'")[0].decode("n", as: Int.self) == 5
                }
                #expect(completed, "five jobs handled, not all recorded completed")
                #expect(wake.timeouts == 0, "the worker's poll timer ran out \(wake.timeouts) time(s): a job waited for the poll")
            }
        }
    }

    @Test("with LISTEN broken (cannot connect) the poll fallback still delivers")
    func pollFallbackDelivers() async throws {
        try await TestDatabase.withQueue { _, queue in
            let handled = Handled()
            // A listener pointed at a socket directory where no server runs: LISTEN never works.
            let broken = "postgresql://postgres@/none?host=/nonexistent-hone-socket-dir"
            try await withWorker(queue: queue, listenURL: broken, pollInterval: .milliseconds(200), handler: { job in
                handled.record(job)
                return .object(["echo": job.args])
            }) { _ in
                try await queue.enqueueMany(kind: "echo", adapter: nil, args: [.object(["a": .int(1)]), .object(["b": .int(2)])])
                await handled.wait(for: 2)
                let reached2 = try await TestDatabase.eventually {
                    try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs WHERE state = 'completed'")[0].decode("n", as: Int.self) == 2
                }
                #expect(reached2)
            }
            let rows = try await queue.pool.query("SELECT result::text AS r FROM hone.jobs WHERE state = 'completed' ORDER BY id")
            #expect(try rows.map { try $0.decode("r", as: String.self) } == [#"{"echo": {"a": 1}}"#, #"{"echo": {"b": 2}}"#])
        }
    }

    @Test("the listener reconnects after its connection is killed and delivers again")
    func listenerReconnects() async throws {
        try await TestDatabase.withQueue { url, queue in
            let listener = PostgresListener(conninfo: url, channels: ["hone_jobs", "other"], healthCheckInterval: .seconds(1),
                                            logger: TestDatabase.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await listener.run() }
                defer { group.cancelAll() }
                var events = listener.events.makeAsyncIterator()
                #expect(await events.next() == .connected)
                try await queue.pool.query("SELECT pg_notify('other', 'one')")
                #expect(await events.next() == .notification(channel: "other", payload: "one"))
                try await queue.pool.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
                #expect(await events.next() == .connected, "reconnected and LISTENing again")
                try await queue.pool.query("SELECT pg_notify('hone_jobs', 'two')")
                #expect(await events.next() == .notification(channel: "hone_jobs", payload: "two"))
            }
        }
    }

    @Test("every invalid example payload in jobs/ is discarded with its reason; valid ones run")
    func catalogueExamples() async throws {
        let root = TestDatabase.paths.jobs
        var valid: [(kind: String, payload: JSONValue)] = []
        var invalid: [(kind: String, file: String, reason: String, payload: JSONValue)] = []
        for kind in ["feedback", "task", "document"] {
            let dir = root.appendingPathComponent(kind)
            for file in try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("valid").path).sorted() {
                valid.append((kind, try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("valid/\(file)")))))
            }
            for file in try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("invalid").path).sorted() {
                let example = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("invalid/\(file)")))
                invalid.append((kind, "\(kind)/invalid/\(file)", try #require(example["reason"]?.stringValue), try #require(example["payload"])))
            }
        }
        #expect(valid.count >= 3 && invalid.count >= 3 * 3)
        try await TestDatabase.withQueue { _, queue in
            var invalidIDs: [Int64: (file: String, reason: String)] = [:]
            for example in invalid {
                let id = try await queue.enqueue(JobRequest(kind: example.kind, adapter: "support", args: example.payload))
                invalidIDs[id] = (example.file, example.reason)
            }
            var validIDs: Set<Int64> = []
            for example in valid {
                validIDs.insert(try await queue.enqueue(JobRequest(kind: example.kind, adapter: "support", args: example.payload)))
            }
            let handled = Handled()
            try await withWorker(queue: queue, listenURL: nil, pollInterval: .milliseconds(50), kinds: nil, handler: { job in
                handled.record(job)
                return nil
            }) { _ in
                await handled.wait(for: valid.count)
                let reached3 = try await TestDatabase.eventually {
                    try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs WHERE finalized_at IS NULL")[0].decode("n", as: Int.self) == 0
                }
                #expect(reached3)
            }
            #expect(Set(handled.jobs.map(\.id)) == validIDs, "the handler saw exactly the valid payloads")
            for (id, example) in invalidIDs {
                let job = try #require(try await queue.job(id: id))
                #expect(job.state == .discarded, "\(example.file)")
                #expect(job.attempt == 1, "\(example.file): not retried")
                let error = job.errors.last?.error ?? ""
                #expect(error.contains(example.reason), "\(example.file): \(error)")
            }
        }
    }

    @Test("a handler that throws is retried; JobDiscard discards at once")
    func handlerErrors() async throws {
        try await TestDatabase.withQueue { _, queue in
            let flaky = try await queue.enqueue(JobRequest(kind: "echo", args: .object(["mode": .string("flaky")])))
            let hopeless = try await queue.enqueue(JobRequest(kind: "echo", args: .object(["mode": .string("hopeless")])))
            let handled = Handled()
            try await withWorker(queue: queue, listenURL: nil, pollInterval: .milliseconds(20), handler: { job in
                handled.record(job)
                if job.args["mode"] == .string("hopeless") { throw JobDiscard(reason: "cannot ever work") }
                if job.attempt == 1 { throw JSONError(message: "transient trouble") }
                return .object(["ok": .bool(true)])
            }) { _ in
                await handled.wait(for: 2)
                // Backoff 0: the failed job is due at once; a leader stages it.
                let leader = try await PostgresConnection.connect(queue.pool.conninfo, logger: TestDatabase.logger)
                defer { leader.close() }
                let reached4 = try await TestDatabase.eventually {
                    _ = try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600))
                    return handled.jobs.count >= 3
                }
                #expect(reached4)
                let reached5 = try await TestDatabase.eventually { try await queue.job(id: flaky)?.state == .completed }
                #expect(reached5)
            }
            let f = try #require(try await queue.job(id: flaky))
            #expect(f.state == .completed && f.attempt == 2)
            #expect(f.errors.map(\.error) == ["transient trouble"])
            let h = try #require(try await queue.job(id: hopeless))
            #expect(h.state == .discarded && h.attempt == 1)
            #expect(h.errors.map(\.error) == ["cannot ever work"])
        }
    }
}
