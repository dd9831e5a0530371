import EmbeddedPostgres
import Foundation
import HoneDaemon
import JSON
import Logging
import Postgres
import Queue

/// The queue's throughput on this machine, on a durable cluster (fsync on), as the
/// hone_feedback role (every row enqueues its job and a NOTIFY through the triggers):
/// - insert_per_s: `INSERT INTO hone.feedback … SELECT` of 100 rows per statement from
///   4 clients (an application that batches);
/// - insert_single_row_per_s: one row per statement and transaction from 8 clients
///   (bound by commit + NOTIFY per transaction on 2 cores);
/// - claim_complete_per_s: 4 workers claiming batches of 100 and completing each batch
///   with one fenced UPDATE, over all the jobs both insert phases made.
enum QueueBench {
    static let batchedRows = 20_000
    static let singleRows = 5_000
    static let clients = 8
    static let workers = 4
    static let batch = 100

    static func run(logger: Logger) async throws {
        try await withDatabase(logger: logger) { url in
            let pool = PostgresPool(conninfo: url, size: clients, logger: logger)
            try await pool.query("INSERT INTO hone.adapters (name) VALUES ('bench')")

            let batchedSeconds = try await timed(pool, clients: 4) { conn, c in
                var first = c * batch
                while first < batchedRows {
                    try await conn.execute("""
                        INSERT INTO hone.feedback (adapter, prompt, correction)
                        SELECT 'bench', 'question ' || g, 'answer ' || g
                        FROM generate_series(\(first)::integer, \(first + batch - 1)::integer) g
                        """)
                    first += 4 * batch
                }
            }
            let singleSeconds = try await timed(pool, clients: clients) { conn, c in
                var i = c
                while i < singleRows {
                    try await conn.execute("""
                        INSERT INTO hone.feedback (adapter, prompt, correction)
                        VALUES ('bench', \("question \(i)"), \("answer \(i)"))
                        """)
                    i += clients
                }
            }
            let feedbackRows = batchedRows + singleRows

            let queue = JobQueue(pool: pool)
            let claimStart = ContinuousClock.now
            let claimed = try await withThrowingTaskGroup(of: Int.self) { group in
                for w in 0..<workers {
                    group.addTask {
                        var n = 0
                        while true {
                            let jobs = try await queue.claim(limit: batch, worker: "bench-\(w)", lease: .seconds(60))
                            if jobs.isEmpty { return n }
                            let done = try await queue.complete(jobs.map { ($0.lease, JSONValue.object(["outcome": .string("dropped")])) })
                            n += done.count
                        }
                    }
                }
                var total = 0
                for try await n in group { total += n }
                return total
            }
            let claimSeconds = (ContinuousClock.now - claimStart) / .seconds(1)
            guard claimed == feedbackRows else {
                throw BenchError(message: "claimed \(claimed) of \(feedbackRows) jobs")
            }
            emit(["bench": "queue", "jobs": feedbackRows, "claim_complete_per_s": Double(claimed) / claimSeconds,
                  "insert_per_s": Double(batchedRows) / batchedSeconds,
                  "insert_single_row_per_s": Double(singleRows) / singleSeconds,
                  "claim_workers": workers, "batch": batch, "durable": true])
            await pool.close()
        }
    }

    /// Runs `body` on `clients` connections at once as hone_feedback; returns seconds.
    static func timed(_ pool: PostgresPool, clients: Int, _ body: @escaping @Sendable (PostgresConnection, Int) async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<clients {
                group.addTask {
                    try await pool.withConnection { conn in
                        try await conn.execute("SET ROLE hone_feedback")
                        try await body(conn, c)
                        try await conn.execute("RESET ROLE")
                    }
                }
            }
            try await group.waitForAll()
        }
        return (ContinuousClock.now - start) / .seconds(1)
    }

    /// A fresh migrated database: on `HONE_BENCH_DATABASE_URL`'s server, or a private durable cluster.
    static func withDatabase(logger: Logger, _ body: (String) async throws -> Void) async throws {
        let paths = HonePaths.fromEnvironment()
        if let url = ProcessInfo.processInfo.environment["HONE_BENCH_DATABASE_URL"] {
            try await HoneDatabase.prepare(conninfo: url, paths: paths, logger: logger)
            try await body(url)
            return
        }
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hone-bench-\(getpid())")
        let cluster = try PostgresCluster(directory: dir, options: .init(durable: true))
        try cluster.initialize(logger: logger)
        try cluster.start(logger: logger)
        defer {
            try? cluster.stop(logger: logger)
            try? FileManager.default.removeItem(at: dir)
        }
        let admin = try await PostgresConnection.connect(cluster.url(), logger: logger)
        try await admin.execute("CREATE DATABASE hone_bench")
        admin.close()
        let url = cluster.url(database: "hone_bench")
        try await HoneDatabase.prepare(conninfo: url, paths: paths, logger: logger)
        try await body(url)
    }
}

struct BenchError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

