import Foundation
import Generation
import Logging
import Postgres
import Server

/// The daemon's part of `/metrics` and `/status`: the queue, the registry, the review queue
/// and training curves from the database, and this replica's learner. Reads go through a
/// pool of their own with a statement timeout, so a scrape neither takes the learner's
/// connections nor hangs while the database is down (the page then says so).
final class OperationsReport: OperatorReport {
    let pool: PostgresPool
    let activity: LearnerActivity
    let replica: ReplicaIdentity
    /// What this replica serves, and the recent versions it keeps for instant rollback.
    let holder: SnapshotHolder
    let recentAdapters: RecentAdapters
    let logger: Logger
    /// Completions younger than this count toward the low-confidence share in `/metrics`.
    static let confidenceWindow = "1 hour"

    init(conninfo: String, activity: LearnerActivity, replica: ReplicaIdentity, holder: SnapshotHolder,
         recentAdapters: RecentAdapters, logger: Logger) {
        pool = PostgresPool(conninfo: conninfo, size: 1, connectTimeout: .seconds(2), logger: logger)
        self.activity = activity
        self.replica = replica
        self.holder = holder
        self.recentAdapters = recentAdapters
        self.logger = logger
    }

    /// Runs `body` on the report's connection with a 2 s statement timeout.
    func read<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await pool.withConnection { connection in
            try await connection.query("SET statement_timeout = 2000")
            return try await body(connection)
        }
    }

    // MARK: /metrics

    func metricsText() async -> String {
        var out = PrometheusText()
        activity.render(into: &out)
        out.family("hone_adapter_rollback_cache_bytes", "gauge", "Bytes of adapter weights kept for recently served versions beyond those served now, so a rollback to one swaps at once.")
        out.sample("hone_adapter_rollback_cache_bytes", [], Double(recentAdapters.keptBytes(beyond: holder.snapshot.map { Array($0.adapters.values) } ?? [])))
        do {
            try await read { db in
                // Every adapter × learning kind × unfinished state, zeros included, so a dashboard's
                // series exist before the first job and do not vanish when the queue drains.
                let depth = try await db.query("""
                    SELECT a.name AS adapter, k.kind, st.state, coalesce(d.jobs, 0) AS jobs,
                           coalesce(extract(epoch FROM now() - d.oldest_due), 0)::float8 AS age
                    FROM hone.adapters a
                    CROSS JOIN unnest(\(LearnerService.kinds)::text[]) AS k(kind)
                    CROSS JOIN unnest(ARRAY['available', 'scheduled', 'running', 'retryable']) AS st(state)
                    LEFT JOIN hone.queue_depth d ON d.adapter = a.name AND d.kind = k.kind AND d.state::text = st.state
                    ORDER BY 1, 2, 3
                    """)
                out.family("hone_queue_jobs", "gauge", "Unfinished learning jobs by adapter, kind and state.")
                for row in depth {
                    out.sample("hone_queue_jobs", [("adapter", try row.decode("adapter")), ("kind", try row.decode("kind")),
                                                   ("state", try row.decode("state"))], Double(try row.decode("jobs", as: Int.self)))
                }
                out.family("hone_queue_oldest_waiting_seconds", "gauge", "Age of the oldest learning job due but not yet running, by adapter and kind (0: none).")
                var oldest: [String: (adapter: String, kind: String, age: Double)] = [:]
                for row in depth {
                    let adapter: String = try row.decode("adapter"), kind: String = try row.decode("kind"), age: Double = try row.decode("age")
                    let key = adapter + "\u{0}" + kind
                    oldest[key] = (adapter, kind, max(age, oldest[key]?.age ?? 0))
                }
                for key in oldest.keys.sorted() {
                    out.sample("hone_queue_oldest_waiting_seconds", [("adapter", oldest[key]!.adapter), ("kind", oldest[key]!.kind)], oldest[key]!.age)
                }
                out.family("hone_versions_total", "counter", "Candidate versions recorded by every replica's learner, by adapter and gate outcome.")
                for row in try await db.query("SELECT adapter, status, count(*) AS n FROM hone.model_versions GROUP BY 1, 2 ORDER BY 1, 2") {
                    out.sample("hone_versions_total", [("adapter", try row.decode("adapter")), ("status", try row.decode("status"))],
                               Double(try row.decode("n", as: Int.self)))
                }
                out.family("hone_low_confidence_ratio", "gauge",
                           "Share of the adapter's logged completions of the last \(Self.confidenceWindow) whose confidence is below its review threshold.")
                out.family("hone_review_queue_items", "gauge", "Low-confidence completions waiting for a rating or a correction, by adapter.")
                let confidence = try await db.query("""
                    SELECT a.name AS adapter,
                           (SELECT avg((c.confidence < a.review_threshold)::int)::float8 FROM hone.completions c
                            WHERE c.adapter = a.name AND c.confidence IS NOT NULL
                              AND c.created_at > now() - \(Self.confidenceWindow)::interval) AS ratio,
                           (SELECT count(*) FROM hone.review_queue q WHERE q.adapter = a.name) AS waiting
                    FROM hone.adapters a ORDER BY 1
                    """)
                for row in confidence {
                    let adapter: String = try row.decode("adapter")
                    if let ratio = try row.decodeIfPresent("ratio", as: Double.self) {
                        out.sample("hone_low_confidence_ratio", [("adapter", adapter)], ratio)
                    }
                }
                for row in confidence {
                    out.sample("hone_review_queue_items", [("adapter", try row.decode("adapter"))], Double(try row.decode("waiting", as: Int.self)))
                }
            }
        } catch {
            logger.warning("/metrics cannot read the database; learning figures from it are left out", metadata: ["error": "\(error)"])
        }
        return out.text
    }
}
