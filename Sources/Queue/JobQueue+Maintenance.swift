import Postgres

/// The leader's periodic work: rescue, stage, prune. Each is one statement, safe to run
/// from several replicas at once (row locks skip what another is handling), though
/// `QueueMaintenance` runs them on one leader only.
extension JobQueue {
    /// Running jobs whose lease expired (their worker died or stalled) become retryable
    /// after the backoff, or discarded when that was their last attempt; the error says
    /// which worker stopped. Returns how many were rescued.
    @discardableResult
    public func rescueExpired(on connection: PostgresConnection? = nil) async throws -> Int {
        let query: PostgresQuery = """
            WITH expired AS (
                SELECT id FROM hone.jobs
                WHERE state = 'running' AND lease_expires_at < now()
                FOR UPDATE SKIP LOCKED
            )
            UPDATE hone.jobs j SET
                errors = array_append(j.errors, hone.job_error(j.attempt,
                    'lease expired: worker ' || coalesce(j.attempted_by[array_upper(j.attempted_by, 1)], '?')
                    || ' stopped heartbeating')),
                failures = j.failures + 1,
                state = CASE WHEN j.failures + 1 >= j.max_attempts THEN 'discarded' ELSE 'retryable' END::hone.job_state,
                scheduled_at = CASE WHEN j.failures + 1 >= j.max_attempts THEN j.scheduled_at
                               ELSE now() + hone.retry_delay(j.failures + 1, \(backoff.baseSeconds), \(backoff.capSeconds)) END,
                finalized_at = CASE WHEN j.failures + 1 >= j.max_attempts THEN now() END,
                lease_expires_at = NULL
            FROM expired WHERE j.id = expired.id
            """
        if let connection { return try await connection.execute(query) }
        return try await pool.withConnection { try await $0.execute(query) }
    }

    /// Scheduled and retryable jobs whose time has come become available (the state
    /// change notifies waiting workers). Returns how many were staged.
    @discardableResult
    public func stageDue(limit: Int = 10_000, on connection: PostgresConnection? = nil) async throws -> Int {
        let query: PostgresQuery = """
            UPDATE hone.jobs SET state = 'available'
            WHERE id IN (
                SELECT id FROM hone.jobs
                WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= now()
                ORDER BY scheduled_at LIMIT \(limit)
                FOR UPDATE SKIP LOCKED)
            """
        if let connection { return try await connection.execute(query) }
        return try await pool.withConnection { try await $0.execute(query) }
    }

    /// Deletes finished jobs older than `retention`; submissions keep their outcome.
    /// Returns how many were deleted.
    @discardableResult
    public func prune(retention: Duration, limit: Int = 10_000, on connection: PostgresConnection? = nil) async throws -> Int {
        let query: PostgresQuery = """
            DELETE FROM hone.jobs WHERE id IN (
                SELECT id FROM hone.jobs
                WHERE finalized_at < now() - make_interval(secs => \(retention / .seconds(1)))
                LIMIT \(limit))
            """
        if let connection { return try await connection.execute(query) }
        return try await pool.withConnection { try await $0.execute(query) }
    }
}
