import Foundation
import JSON
import Postgres

/// The states of DESIGN.md's queue, as stored in `hone.job_state`.
public enum JobState: String, Sendable, CaseIterable, PostgresDecodable, PostgresEncodable {
    case available, scheduled, running, retryable, completed, cancelled, discarded

    public init?(postgresText: String) { self.init(rawValue: postgresText) }
    public var postgresValue: PostgresValue { .text(rawValue) }

    /// True for the states a job never leaves on its own.
    public var isFinal: Bool { self == .completed || self == .cancelled || self == .discarded }
}

/// The fence of one attempt: heartbeats and finalizes match `(id, state = running,
/// attempt)`, so a worker whose lease was taken over can never touch the newer attempt.
public struct JobLease: Sendable, Hashable {
    public let id: Int64
    public let attempt: Int
    public init(id: Int64, attempt: Int) {
        self.id = id
        self.attempt = attempt
    }
}

/// One failed attempt, as recorded in `hone.jobs.errors`.
public struct JobAttemptError: Sendable, Hashable {
    public let attempt: Int
    public let at: String
    public let error: String
}

/// A row of `hone.jobs`.
public struct Job: Sendable {
    public let id: Int64
    public let kind: String
    public let adapter: String?
    public let state: JobState
    public let priority: Int
    public let args: JSONValue
    public let attempt: Int
    public let maxAttempts: Int
    /// Attempts that ended in an error or an expired lease; attempts given back
    /// (`JobQueue.release`) do not count.
    public let failures: Int
    public let errors: [JobAttemptError]
    public let result: JSONValue?
    public let uniqueKey: String?
    public let attemptedBy: [String]
    public let createdAt: Date
    public let scheduledAt: Date
    public let attemptedAt: Date?
    public let finalizedAt: Date?

    /// The fence for this attempt.
    public var lease: JobLease { JobLease(id: id, attempt: attempt) }

    /// The column list `init(row:)` reads, for SELECT and RETURNING clauses.
    static let columns = """
        id, kind, adapter, state, priority, args, attempt, max_attempts, failures, errors, result, unique_key,
        attempted_by, created_at, scheduled_at, attempted_at, finalized_at
        """

    init(row: PostgresRow) throws {
        id = try row.decode("id")
        kind = try row.decode("kind")
        adapter = try row.decodeIfPresent("adapter")
        state = try row.decode("state")
        priority = try row.decode("priority")
        args = try JSONValue(parsing: try row.decode("args", as: String.self))
        attempt = try row.decode("attempt")
        maxAttempts = try row.decode("max_attempts")
        failures = try row.decode("failures")
        errors = try row.decode("errors", as: [String].self).map { text in
            let value = try JSONValue(parsing: text)
            return JobAttemptError(attempt: value["attempt"]?.intValue ?? 0,
                                   at: value["at"]?.stringValue ?? "",
                                   error: value["error"]?.stringValue ?? text)
        }
        result = try row.decodeIfPresent("result", as: String.self).map { try JSONValue(parsing: $0) }
        uniqueKey = try row.decodeIfPresent("unique_key")
        attemptedBy = try row.decode("attempted_by")
        createdAt = try row.decode("created_at")
        scheduledAt = try row.decode("scheduled_at")
        attemptedAt = try row.decodeIfPresent("attempted_at")
        finalizedAt = try row.decodeIfPresent("finalized_at")
    }
}

/// What to enqueue; unset fields take the kind's defaults from `hone.job_kinds`.
public struct JobRequest: Sendable {
    public var kind: String
    public var adapter: String?
    public var args: JSONValue
    public var uniqueKey: String?
    public var priority: Int?
    public var scheduledAt: Date?
    public var maxAttempts: Int?

    public init(kind: String, adapter: String? = nil, args: JSONValue, uniqueKey: String? = nil,
                priority: Int? = nil, scheduledAt: Date? = nil, maxAttempts: Int? = nil) {
        self.kind = kind
        self.adapter = adapter
        self.args = args
        self.uniqueKey = uniqueKey
        self.priority = priority
        self.scheduledAt = scheduledAt
        self.maxAttempts = maxAttempts
    }
}
