import Foundation
import JSON
import Postgres
import Queue
import Testing

@Suite("Queue: claiming, fencing, rescue", .timeLimit(.minutes(3)))
struct QueueClaimTests {
    @Test("8 concurrent claimers over 10,000 jobs claim each exactly once")
    func concurrentClaimersClaimEachJobOnce() async throws {
        try await TestDatabase.withQueue(poolSize: 8) { _, queue in
            let total = 10_000
            let ids = try await queue.enqueueMany(kind: "echo", adapter: "a",
                                                  args: (0..<total).map { .object(["n": .int($0)]) })
            #expect(ids.count == total)
            let claimed = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for w in 0..<8 {
                    group.addTask {
                        var mine: [Int64] = []
                        while true {
                            let jobs = try await queue.claim(limit: 50, worker: "w\(w)", lease: .seconds(60))
                            if jobs.isEmpty { return mine }
                            mine += jobs.map(\.id)
                            let done = try await queue.complete(jobs.map { ($0.lease, nil) })
                            #expect(done.count == jobs.count)
                        }
                    }
                }
                var all: [[Int64]] = []
                for try await part in group { all.append(part) }
                return all
            }
            let flat = claimed.flatMap { $0 }
            #expect(flat.count == total, "every claim returned a job not claimed before")
            #expect(Set(flat) == Set(ids))
            #expect(claimed.filter { !$0.isEmpty }.count > 1, "work was spread over several claimers")
            let rows = try await queue.pool.query(
                "SELECT count(*) FILTER (WHERE state = 'completed' AND attempt = 1) AS ok, count(*) AS n FROM hone.jobs")
            #expect(try rows[0].decode("ok", as: Int.self) == total)
            #expect(try rows[0].decode("n", as: Int.self) == total)
        }
    }

    @Test("claims follow priority, then due time, and skip future jobs")
    func claimOrder() async throws {
        try await TestDatabase.withQueue { _, queue in
            let low = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), priority: 4))
            let urgent = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), priority: 1))
            let later = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), priority: 1,
                                                           scheduledAt: Date().addingTimeInterval(3600)))
            let jobs = try await queue.claim(limit: 10, worker: "w", lease: .seconds(30))
            #expect(jobs.map(\.id) == [urgent, low])
            #expect(try await queue.job(id: later)?.state == .scheduled)
        }
    }

    @Test("a worker killed mid-job is rescued, retried with the attempt counted, then discarded after max attempts")
    func killedWorkerIsRescuedThenDiscarded() async throws {
        try await TestDatabase.withQueue { url, queue in
            let id = try await queue.enqueue(JobRequest(kind: "echo", args: .object(["x": .int(1)])))
            let job = try await queue.job(id: id)
            #expect(job?.maxAttempts == 3)
            let leader = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { leader.close() }
            for attempt in 1...3 {
                // The worker claims on its own connection, then dies: connection gone, no heartbeats.
                let worker = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
                let claimed = try await queue.claim(limit: 1, worker: "doomed-\(attempt)", lease: .milliseconds(50), on: worker)
                #expect(claimed.map(\.id) == [id])
                #expect(claimed.first?.attempt == attempt)
                try await leader.execute("SELECT pg_terminate_backend(\(worker.backendPID))")
                // Let the 50 ms lease run out on the database's clock.
                try await leader.execute("SELECT pg_sleep(0.2)")
                let tick = try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600))
                #expect(tick.isLeader)
                #expect(tick.rescued == 1)
                let after = try #require(try await queue.job(id: id))
                #expect(after.attempt == attempt)
                #expect(after.errors.count == attempt)
                #expect(after.errors.last?.error.contains("doomed-\(attempt) stopped heartbeating") == true)
                #expect(after.state == (attempt < 3 ? .available : .discarded), "backoff 0: staged in the same tick")
                worker.close()
            }
            let final = try #require(try await queue.job(id: id))
            #expect(final.state == .discarded)
            #expect(final.finalizedAt != nil)
            #expect(final.errors.map(\.attempt) == [1, 2, 3])
            #expect(try await queue.claim(limit: 1, worker: "w", lease: .seconds(5)).isEmpty)
        }
    }

    @Test("with retriesAlone a job tried before is claimed by itself, and fresh jobs only with fresh ones")
    func retriesAlone() async throws {
        try await TestDatabase.withQueue { url, queue in
            let ids = try await queue.enqueueMany(kind: "echo", adapter: nil, args: (0..<4).map { .object(["n": .int($0)]) })
            // A batch dies with its worker (a payload that crashes it): every job is rescued.
            let batch = try await queue.claim(limit: 8, worker: "crashed", lease: .milliseconds(50))
            #expect(batch.map(\.id) == ids)
            let leader = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { leader.close() }
            try await leader.execute("SELECT pg_sleep(0.2)")
            #expect(try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600)).rescued == 4)
            let fresh = try await queue.enqueue(JobRequest(kind: "echo", args: .object(["n": .int(9)]), priority: 1))
            // The fresh, more urgent job comes first and alone of its kind; then each retry alone.
            var claims: [[Int64]] = []
            while true {
                let jobs = try await queue.claim(limit: 8, worker: "next", lease: .seconds(60), retriesAlone: true)
                if jobs.isEmpty { break }
                claims.append(jobs.map(\.id))
                _ = try await queue.complete(jobs.map { ($0.lease, nil) })
            }
            #expect(claims == [[fresh]] + ids.map { [$0] })
            #expect(try await queue.job(id: ids[0])?.failures == 1)

            // Jobs given back (a shutdown, a rollback under the update) did nothing wrong:
            // they are batched again, with fresh ones.
            let given = try await queue.enqueueMany(kind: "echo", adapter: nil, args: (0..<3).map { .object(["n": .int($0)]) })
            for job in try await queue.claim(limit: 8, worker: "superseded", lease: .seconds(60)) {
                #expect(try await queue.release(job.lease, reason: "released: the active version changed"))
            }
            let another = try await queue.enqueue(JobRequest(kind: "echo", args: .object(["n": .int(10)])))
            let again = try await queue.claim(limit: 8, worker: "next", lease: .seconds(60), retriesAlone: true)
            #expect(again.map(\.id) == given + [another])
            #expect(again.map(\.attempt) == [2, 2, 2, 1] && again.allSatisfy { $0.failures == 0 })
        }
    }

    @Test("a late heartbeat or finalize from a rescued worker changes nothing")
    func lateFinalizeIsFenced() async throws {
        try await TestDatabase.withQueue { url, queue in
            let id = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:])))
            let first = try #require(try await queue.claim(limit: 1, worker: "slow", lease: .milliseconds(50)).first)
            let leader = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { leader.close() }
            try await leader.execute("SELECT pg_sleep(0.2)")
            _ = try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600))
            let second = try #require(try await queue.claim(limit: 1, worker: "fresh", lease: .seconds(60)).first)
            #expect(second.id == id && second.attempt == 2)

            // The slow worker comes back from its pause and tries everything.
            #expect(try await queue.heartbeat(first.lease, lease: .seconds(60)) == false)
            #expect(try await queue.complete([(first.lease, .object(["late": .bool(true)]))]).isEmpty)
            #expect(try await queue.fail(first.lease, error: "late failure") == nil)
            #expect(try await queue.discard(first.lease, reason: "late discard") == false)
            #expect(try await queue.release(first.lease, reason: "late release") == false)

            let row = try #require(try await queue.job(id: id))
            #expect(row.state == .running)
            #expect(row.attempt == 2)
            #expect(row.result == nil)
            #expect(row.errors.count == 1, "only the rescue's error")
            #expect(row.attemptedBy == ["slow", "fresh"])
            // The current holder still finishes normally.
            #expect(try await queue.complete([(second.lease, .object(["ok": .bool(true)]))]) == [second.lease])
        }
    }

    @Test("a job released by a worker shutting down is claimable at once, its attempt counted and the reason kept")
    func releasedJobIsClaimableAtOnce() async throws {
        try await TestDatabase.withQueue(backoff: Backoff(baseSeconds: 30, capSeconds: 600)) { _, queue in
            let id = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:])))
            let job = try #require(try await queue.claim(limit: 1, worker: "stopping", lease: .seconds(30)).first)
            #expect(try await queue.release(job.lease, reason: "released: shutting down"))
            let again = try #require(try await queue.claim(limit: 1, worker: "next", lease: .seconds(30)).first)
            #expect(again.id == id && again.attempt == 2)
            #expect(again.errors.map(\.error) == ["released: shutting down"])
            #expect(try await queue.release(job.lease, reason: "twice") == false)
        }
    }

    @Test("attempts given back spend none of max_attempts: a job released three times still has both its tries")
    func releasesSpendNoAttempts() async throws {
        try await TestDatabase.withQueue(backoff: Backoff(baseSeconds: 0, capSeconds: 0)) { _, queue in
            let id = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), maxAttempts: 2))
            for _ in 0..<3 {
                let job = try #require(try await queue.claim(limit: 1, worker: "w", lease: .seconds(30)).first)
                #expect(try await queue.release(job.lease, reason: "released: an operator's rollback"))
            }
            let fourth = try #require(try await queue.claim(limit: 1, worker: "w", lease: .seconds(30)).first)
            #expect(fourth.id == id && fourth.attempt == 4 && fourth.failures == 0)
            #expect(try await queue.fail(fourth.lease, error: "boom") == .retryable)
            try await queue.pool.query("UPDATE hone.jobs SET state = 'available', scheduled_at = now() WHERE id = \(id)")
            let fifth = try #require(try await queue.claim(limit: 1, worker: "w", lease: .seconds(30)).first)
            #expect(fifth.failures == 1)
            #expect(try await queue.fail(fifth.lease, error: "boom again") == .discarded)
        }
    }

    @Test("a failed attempt waits out its backoff, then is staged and retried")
    func failureBacksOffThenRetries() async throws {
        try await TestDatabase.withQueue(backoff: Backoff(baseSeconds: 30, capSeconds: 600)) { url, queue in
            let id = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:])))
            let job = try #require(try await queue.claim(limit: 1, worker: "w", lease: .seconds(30)).first)
            #expect(try await queue.fail(job.lease, error: "boom") == .retryable)
            let delay = try await queue.pool.query(
                "SELECT extract(epoch FROM scheduled_at - now()) AS s FROM hone.jobs WHERE id = \(id)")[0].decode("s", as: Double.self)
            #expect(delay > 30 * 0.75 - 1 && delay <= 30 * 1.25, "base 30 s ± 25% jitter")
            let leader = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { leader.close() }
            var tick = try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600))
            #expect(tick.staged == 0, "not due yet")
            try await queue.pool.query("UPDATE hone.jobs SET scheduled_at = now() - interval '1 second' WHERE id = \(id)")
            tick = try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600))
            #expect(tick.staged == 1)
            let again = try #require(try await queue.claim(limit: 1, worker: "w", lease: .seconds(30)).first)
            #expect(again.attempt == 2)
            #expect(again.errors.map(\.error) == ["boom"])
        }
    }

    @Test("retry_delay doubles per attempt, stays within ±25% jitter and the cap")
    func retryDelayBounds() async throws {
        try await TestDatabase.withQueue { _, queue in
            let rows = try await queue.pool.query("""
                SELECT a, extract(epoch FROM hone.retry_delay(a, 2, 60)) AS s
                FROM generate_series(1, 10) a, generate_series(1, 50)
                """)
            for row in rows {
                let attempt: Int = try row.decode("a")
                let seconds: Double = try row.decode("s")
                let nominal = min(60, 2 * pow(2, Double(attempt - 1)))
                #expect(seconds >= nominal * 0.75 - 1e-9 && seconds <= min(60, nominal * 1.25) + 1e-9)
            }
        }
    }

    @Test("only one leader at a time; another takes over when its connection dies")
    func singleLeader() async throws {
        try await TestDatabase.withQueue { url, queue in
            let a = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            let b = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { b.close() }
            #expect(try await QueueMaintenance.tick(queue: queue, connection: a, retention: .seconds(60)).isLeader)
            #expect(try await QueueMaintenance.tick(queue: queue, connection: a, retention: .seconds(60)).isLeader)
            #expect(try await QueueMaintenance.tick(queue: queue, connection: b, retention: .seconds(60)).isLeader == false)
            a.close()
            // The server releases the lock when the session ends; poll its catalogue, not the clock.
            let reached1 = try await TestDatabase.eventually {
                try await QueueMaintenance.tick(queue: queue, connection: b, retention: .seconds(60)).isLeader
            }
            #expect(reached1, "b becomes leader after a's session ended")
        }
    }

    @Test("finished jobs are pruned after the retention period")
    func pruning() async throws {
        try await TestDatabase.withQueue { url, queue in
            let ids = try await queue.enqueueMany(kind: "echo", adapter: nil, args: [.object([:]), .object([:]), .object([:])])
            let jobs = try await queue.claim(limit: 3, worker: "w", lease: .seconds(30))
            try await queue.complete(jobs.prefix(2).map { ($0.lease, nil) })
            try await queue.pool.query("UPDATE hone.jobs SET finalized_at = now() - interval '2 hours' WHERE id = \(ids[0])")
            let leader = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { leader.close() }
            let tick = try await QueueMaintenance.tick(queue: queue, connection: leader, retention: .seconds(3600))
            #expect(tick.pruned == 1)
            #expect(try await queue.job(id: ids[0]) == nil)
            #expect(try await queue.job(id: ids[1])?.state == .completed)
            #expect(try await queue.job(id: ids[2])?.state == .running)
        }
    }

    @Test("unique key yields one row under concurrent inserts, and frees after cancel")
    func uniqueKeyUnderConcurrency() async throws {
        try await TestDatabase.withQueue(poolSize: 8) { _, queue in
            let ids = try await withThrowingTaskGroup(of: Int64.self) { group in
                for i in 0..<32 {
                    group.addTask {
                        try await queue.enqueue(JobRequest(kind: "echo", args: .object(["i": .int(i)]), uniqueKey: "same"))
                    }
                }
                var all: [Int64] = []
                for try await id in group { all.append(id) }
                return all
            }
            #expect(Set(ids).count == 1, "every insert got the one job's id")
            let count = try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs WHERE unique_key = 'same'")[0]
                .decode("n", as: Int.self)
            #expect(count == 1)
            #expect(try await queue.cancel(id: ids[0]))
            let fresh = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), uniqueKey: "same"))
            #expect(fresh != ids[0])
        }
    }

    @Test("cancelling: a queued job never runs; a running job's lease is gone")
    func cancellation() async throws {
        try await TestDatabase.withQueue { _, queue in
            let queued = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), priority: 4))
            let running = try await queue.enqueue(JobRequest(kind: "echo", args: .object([:]), priority: 1))
            let job = try #require(try await queue.claim(limit: 1, worker: "w", lease: .seconds(30)).first)
            #expect(job.id == running)
            #expect(try await queue.cancel(id: queued, reason: "not needed"))
            #expect(try await queue.cancel(id: running, reason: "operator said stop"))
            #expect(try await queue.heartbeat(job.lease, lease: .seconds(30)) == false)
            #expect(try await queue.complete([(job.lease, nil)]).isEmpty)
            #expect(try await queue.claim(limit: 5, worker: "w", lease: .seconds(30)).isEmpty)
            #expect(try await queue.job(id: running)?.errors.last?.error == "operator said stop")
            #expect(try await queue.cancel(id: running) == false, "already final")
            #expect(try await queue.retry(id: queued))
            #expect(try await queue.claim(limit: 5, worker: "w", lease: .seconds(30)).map(\.id) == [queued])
        }
    }
}
