import Foundation
import JSON
import Postgres

/// Exponential backoff with jitter for failed attempts: base·2^(attempt-1), capped,
/// ±25% jitter. Computed by `hone.retry_delay` in SQL so worker failures and lease
/// rescues use one formula and the database's clock.
public struct Backoff: Sendable {
    public var baseSeconds: Double
    public var capSeconds: Double
    public init(baseSeconds: Double = 5, capSeconds: Double = 3600) {
        self.baseSeconds = baseSeconds
        self.capSeconds = capSeconds
    }
}

/// The job queue's operations on `hone.jobs`. Every eligibility check uses the
/// database's `now()`, never this machine's clock.
///
/// Methods take an optional connection: pass the one of an open transaction to make a
/// job's effect and its completion commit together (exactly-once effects).
public struct JobQueue: Sendable {
    public let pool: PostgresPool
    public let backoff: Backoff

    public init(pool: PostgresPool, backoff: Backoff = Backoff()) {
        self.pool = pool
        self.backoff = backoff
    }

    private func run(_ query: PostgresQuery, on connection: PostgresConnection?) async throws -> PostgresRows {
        if let connection { return try await connection.query(query) }
        return try await pool.query(query)
    }

    // MARK: Producing

    /// Adds a job through `hone.enqueue`; with a taken unique key, returns the existing id.
    @discardableResult
    public func enqueue(_ request: JobRequest, on connection: PostgresConnection? = nil) async throws -> Int64 {
        let rows = try await run("""
            SELECT hone.enqueue(\(request.kind), \(request.adapter), \(JSONText(request.args.jsonText))::jsonb,
                                \(request.uniqueKey), \(request.priority)::integer, \(request.scheduledAt)::timestamptz,
                                \(request.maxAttempts)::integer) AS id
            """, on: connection)
        return try rows[0].decode("id")
    }

    /// Adds many jobs of one kind in one statement (no unique keys); returns their ids.
    @discardableResult
    public func enqueueMany(kind: String, adapter: String?, args: [JSONValue], on connection: PostgresConnection? = nil) async throws -> [Int64] {
        let rows = try await run("""
            SELECT hone.enqueue(\(kind), \(adapter), a) AS id
            FROM unnest(\(args.map { JSONText($0.jsonText) })::jsonb[]) AS a
            """, on: connection)
        return try rows.map { try $0.decode("id") }
    }

    // MARK: Working

    /// The next available job in line (most urgent first) among `kinds` of `adapter`, without
    /// claiming it: its kind decides the batch size and lease of the next claim.
    public func next(kinds: [String]? = nil, adapter: String? = nil, on connection: PostgresConnection? = nil) async throws -> Job? {
        try await run("""
            SELECT \(unsafe: Job.columns) FROM hone.jobs
            WHERE state = 'available' AND scheduled_at <= now()
              AND (\(kinds)::text[] IS NULL OR kind = ANY(\(kinds)::text[]))
              AND (\(adapter)::text IS NULL OR adapter = \(adapter)::text)
            ORDER BY priority, scheduled_at, id LIMIT 1
            """, on: connection).first.map(Job.init(row:))
    }

    /// Claims up to `limit` available jobs, most urgent first, skipping rows other
    /// claimers hold locked: concurrent claimers never get the same job.
    ///
    /// With `retriesAlone`, a job with a failed attempt is claimed by itself and the others
    /// only with each other: a payload that crashes its worker (every attempt dies with
    /// the process and its lease expires) then spends only its own attempts, not those of
    /// the jobs that happened to share its batch. A job whose attempts were only given back
    /// (`release`) did nothing wrong and is batched again.
    public func claim(limit: Int, worker: String, kinds: [String]? = nil, adapter: String? = nil,
                      lease: Duration, retriesAlone: Bool = false, on connection: PostgresConnection? = nil) async throws -> [Job] {
        var limit = limit
        var freshOnly = false
        if retriesAlone, limit > 1 {
            guard let first = try await next(kinds: kinds, adapter: adapter, on: connection) else { return [] }
            if first.failures > 0 { limit = 1 } else { freshOnly = true }
        }
        let rows = try await run("""
            WITH picked AS MATERIALIZED (
                SELECT id FROM hone.jobs
                WHERE state = 'available' AND scheduled_at <= now()
                  AND (\(kinds)::text[] IS NULL OR kind = ANY(\(kinds)::text[]))
                  AND (\(adapter)::text IS NULL OR adapter = \(adapter)::text)
                  AND (NOT \(freshOnly) OR failures = 0)
                ORDER BY priority, scheduled_at, id
                LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE hone.jobs j
            SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), heartbeat_at = now(),
                lease_expires_at = now() + make_interval(secs => \(lease / .seconds(1))),
                attempted_by = array_append(j.attempted_by, \(worker)::text)
            FROM picked WHERE j.id = picked.id
            RETURNING j.*
            """, on: connection)
        return try rows.map(Job.init(row:)).sorted { ($0.priority, $0.scheduledAt, $0.id) < ($1.priority, $1.scheduledAt, $1.id) }
    }

    /// Extends the lease; false when this attempt no longer holds the job (rescued,
    /// cancelled or finished elsewhere): the worker must stop working on it.
    public func heartbeat(_ lease: JobLease, lease duration: Duration) async throws -> Bool {
        let rows = try await run("""
            UPDATE hone.jobs SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => \(duration / .seconds(1)))
            WHERE id = \(lease.id) AND state = 'running' AND attempt = \(lease.attempt)
            """, on: nil)
        return rows.affectedRows == 1
    }

    /// Completes the given attempts with their results; returns the leases that were
    /// still held (the others changed nothing).
    @discardableResult
    public func complete(_ finished: [(lease: JobLease, result: JSONValue?)], on connection: PostgresConnection? = nil) async throws -> Set<JobLease> {
        guard !finished.isEmpty else { return [] }
        let rows = try await run("""
            UPDATE hone.jobs j
            SET state = 'completed', finalized_at = now(), lease_expires_at = NULL, result = f.result
            FROM unnest(\(finished.map(\.lease.id))::bigint[], \(finished.map(\.lease.attempt))::integer[],
                        \(finished.map { $0.result.map { JSONText($0.jsonText) } })::jsonb[]) AS f(id, attempt, result)
            WHERE j.id = f.id AND j.state = 'running' AND j.attempt = f.attempt
            RETURNING j.id, j.attempt
            """, on: connection)
        return Set(try rows.map { JobLease(id: try $0.decode("id"), attempt: try $0.decode("attempt")) })
    }

    /// Records a failed attempt: retryable after the backoff, or discarded when it was the
    /// job's `max_attempts`-th failure (attempts given back by `release` do not count, as
    /// River's snooze and Oban's do not). Returns the new state, or nil when the lease was
    /// no longer held.
    @discardableResult
    public func fail(_ lease: JobLease, error: String, on connection: PostgresConnection? = nil) async throws -> JobState? {
        let rows = try await run("""
            UPDATE hone.jobs SET
                errors = array_append(errors, hone.job_error(attempt, \(error))), failures = failures + 1,
                state = CASE WHEN failures + 1 >= max_attempts THEN 'discarded' ELSE 'retryable' END::hone.job_state,
                scheduled_at = CASE WHEN failures + 1 >= max_attempts THEN scheduled_at
                               ELSE now() + hone.retry_delay(failures + 1, \(backoff.baseSeconds), \(backoff.capSeconds)) END,
                finalized_at = CASE WHEN failures + 1 >= max_attempts THEN now() END,
                lease_expires_at = NULL
            WHERE id = \(lease.id) AND state = 'running' AND attempt = \(lease.attempt)
            RETURNING state
            """, on: connection)
        return try rows.first?.decode("state")
    }

    /// Discards the attempt's job without retrying (e.g. an invalid payload), keeping the
    /// reason in its errors. False when the lease was no longer held.
    @discardableResult
    public func discard(_ lease: JobLease, reason: String, on connection: PostgresConnection? = nil) async throws -> Bool {
        let rows = try await run("""
            UPDATE hone.jobs SET state = 'discarded', finalized_at = now(), lease_expires_at = NULL,
                errors = array_append(errors, hone.job_error(attempt, \(reason)))
            WHERE id = \(lease.id) AND state = 'running' AND attempt = \(lease.attempt)
            """, on: connection)
        return rows.affectedRows == 1
    }

    /// Gives a running attempt's job back to the queue at once (a worker shutting down in
    /// the middle of it, or work made stale by an operator): available now, without the
    /// retry backoff, the attempt counted but not as a failure (it spends none of
    /// `max_attempts`), and `reason` kept in its errors. False when the lease was no longer held.
    @discardableResult
    public func release(_ lease: JobLease, reason: String, on connection: PostgresConnection? = nil) async throws -> Bool {
        let rows = try await run("""
            UPDATE hone.jobs SET state = 'available', scheduled_at = now(), lease_expires_at = NULL,
                errors = array_append(errors, hone.job_error(attempt, \(reason)))
            WHERE id = \(lease.id) AND state = 'running' AND attempt = \(lease.attempt)
            """, on: connection)
        return rows.affectedRows == 1
    }

    // MARK: Operating

    /// Cancels a job that has not finished: a queued one never runs; a running one's
    /// worker loses its lease at the next heartbeat and stops. False when already final.
    @discardableResult
    public func cancel(id: Int64, reason: String = "cancelled", on connection: PostgresConnection? = nil) async throws -> Bool {
        let rows = try await run("""
            UPDATE hone.jobs SET state = 'cancelled', finalized_at = now(), lease_expires_at = NULL,
                errors = array_append(errors, hone.job_error(attempt, \(reason)))
            WHERE id = \(id) AND state NOT IN ('completed', 'cancelled', 'discarded')
            """, on: connection)
        return rows.affectedRows == 1
    }

    /// Makes a waiting, failed, discarded or cancelled job available now, granting one
    /// more attempt when it had used them all. False for running or completed jobs.
    @discardableResult
    public func retry(id: Int64, on connection: PostgresConnection? = nil) async throws -> Bool {
        let rows = try await run("""
            UPDATE hone.jobs SET state = 'available', scheduled_at = now(), finalized_at = NULL,
                max_attempts = greatest(max_attempts, attempt + 1)
            WHERE id = \(id) AND state IN ('scheduled', 'retryable', 'discarded', 'cancelled')
            """, on: connection)
        return rows.affectedRows == 1
    }

    /// Gives up on a job that has not finished, keeping the reason in its errors (an
    /// operator's decision; its submission's outcome becomes `failed`). False when final.
    @discardableResult
    public func discard(id: Int64, reason: String, on connection: PostgresConnection? = nil) async throws -> Bool {
        let rows = try await run("""
            UPDATE hone.jobs SET state = 'discarded', finalized_at = now(), lease_expires_at = NULL,
                errors = array_append(errors, hone.job_error(attempt, \(reason)))
            WHERE id = \(id) AND state NOT IN ('completed', 'cancelled', 'discarded')
            """, on: connection)
        return rows.affectedRows == 1
    }

    /// Jobs matching every given filter, newest first.
    public func jobs(state: JobState? = nil, kind: String? = nil, adapter: String? = nil, olderThan: Duration? = nil,
                     limit: Int = 50, on connection: PostgresConnection? = nil) async throws -> [Job] {
        let rows = try await run("""
            SELECT \(unsafe: Job.columns) FROM hone.jobs
            WHERE (\(state)::hone.job_state IS NULL OR state = \(state)::hone.job_state)
              AND (\(kind)::text IS NULL OR kind = \(kind)::text)
              AND (\(adapter)::text IS NULL OR adapter = \(adapter)::text)
              AND (\(olderThan.map { $0 / .seconds(1) })::double precision IS NULL
                   OR created_at < now() - make_interval(secs => \(olderThan.map { $0 / .seconds(1) })::double precision))
            ORDER BY id DESC LIMIT \(limit)
            """, on: connection)
        return try rows.map(Job.init(row:))
    }

    /// One job by id.
    public func job(id: Int64, on connection: PostgresConnection? = nil) async throws -> Job? {
        let rows = try await run("SELECT \(unsafe: Job.columns) FROM hone.jobs WHERE id = \(id)", on: connection)
        return try rows.first.map(Job.init(row:))
    }
}

