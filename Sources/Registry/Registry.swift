import Foundation
import JSON
import Postgres

/// A row of `hone.adapters`.
public struct AdapterRecord: Sendable, Equatable {
    public let name: String
    public let settings: JSONValue
    /// nil until the first version is published: the base model answers.
    public let activeVersion: Int?
    public let paused: Bool
    public let pinned: Bool
    public let createdAt: Date
    public let updatedAt: Date

    static let columns = "name, settings, active_version, paused, pinned, created_at, updated_at"

    init(row: PostgresRow) throws {
        name = try row.decode("name")
        settings = try JSONValue(parsing: try row.decode("settings", as: JSONText.self).text)
        activeVersion = try row.decodeIfPresent("active_version")
        paused = try row.decode("paused")
        pinned = try row.decode("pinned")
        createdAt = try row.decode("created_at")
        updatedAt = try row.decode("updated_at")
    }
}

/// A row of `hone.model_versions` without its blob.
public struct VersionRecord: Sendable, Equatable {
    public let adapter: String
    public let version: Int
    public let parentVersion: Int?
    /// `accepted` or `rejected`.
    public let status: String
    public let baseModelSHA256: String
    public let blobSHA256: String?
    public let blobBytes: Int
    public let metrics: JSONValue
    public let jobIDs: [Int64]
    public let examples: Int
    public let reason: String?
    public let createdAt: Date

    /// The id clients see in `system_fingerprint`: `support@v42`.
    public var id: String { VersionRecord.id(adapter: adapter, version: version) }
    public static func id(adapter: String, version: Int) -> String { "\(adapter)@v\(version)" }

    static let columns = """
        adapter, version, parent_version, status, base_model_sha256, blob_sha256, coalesce(octet_length(blob), 0) AS blob_bytes,
        metrics, job_ids, examples, reason, created_at
        """

    init(row: PostgresRow) throws {
        adapter = try row.decode("adapter")
        version = try row.decode("version")
        parentVersion = try row.decodeIfPresent("parent_version")
        status = try row.decode("status")
        baseModelSHA256 = try row.decode("base_model_sha256")
        blobSHA256 = try row.decodeIfPresent("blob_sha256")
        blobBytes = try row.decode("blob_bytes")
        metrics = try JSONValue(parsing: try row.decode("metrics", as: JSONText.self).text)
        jobIDs = try row.decode("job_ids")
        examples = try row.decode("examples")
        reason = try row.decodeIfPresent("reason")
        createdAt = try row.decode("created_at")
    }
}

/// A row of `hone.adapter_events`: one change of what an adapter serves.
public struct AdapterEvent: Sendable, Equatable {
    public let id: Int64
    public let adapter: String
    public let action: String
    public let fromVersion: Int?
    public let toVersion: Int?
    public let actor: String
    public let reason: String?
    public let at: Date

    init(row: PostgresRow) throws {
        id = try row.decode("id")
        adapter = try row.decode("adapter")
        action = try row.decode("action")
        fromVersion = try row.decodeIfPresent("from_version")
        toVersion = try row.decodeIfPresent("to_version")
        actor = try row.decode("actor")
        reason = try row.decodeIfPresent("reason")
        at = try row.decode("at")
    }
}

/// A candidate to record: accepted ones carry their blob.
public struct VersionCandidate: Sendable {
    public var adapter: String
    public var parentVersion: Int?
    public var accepted: Bool
    public var baseModelSHA256: String
    public var blob: (bytes: [UInt8], sha256: String)?
    public var metrics: JSONValue
    public var jobIDs: [Int64]
    public var examples: Int
    public var reason: String?

    public init(adapter: String, parentVersion: Int?, accepted: Bool, baseModelSHA256: String,
                blob: (bytes: [UInt8], sha256: String)?, metrics: JSONValue, jobIDs: [Int64], examples: Int, reason: String?) {
        self.adapter = adapter
        self.parentVersion = parentVersion
        self.accepted = accepted
        self.baseModelSHA256 = baseModelSHA256
        self.blob = blob
        self.metrics = metrics
        self.jobIDs = jobIDs
        self.examples = examples
        self.reason = reason
    }
}

/// Adapters and their versions in PostgreSQL: the one place `honed` replicas and `honectl`
/// read and change what serves. Every change that alters serving is one transaction with
/// its audit row in `hone.adapter_events`, and notifies `hone_versions` (trigger).
public struct Registry: Sendable {
    public let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    private func run(_ query: PostgresQuery, on connection: PostgresConnection?) async throws -> PostgresRows {
        if let connection { return try await connection.query(query) }
        return try await pool.query(query)
    }

    // MARK: Adapters

    /// Creates an adapter with its settings (a JSON object) and no version yet.
    public func createAdapter(_ name: String, settings: JSONValue, reason: String? = nil) async throws {
        try await pool.query("SELECT hone.create_adapter(\(name), \(JSONText(settings.jsonText))::jsonb, \(reason))")
    }

    public func adapters(on connection: PostgresConnection? = nil) async throws -> [AdapterRecord] {
        try await run("SELECT \(unsafe: AdapterRecord.columns) FROM hone.adapters ORDER BY name", on: connection)
            .map(AdapterRecord.init(row:))
    }

    public func adapter(_ name: String, on connection: PostgresConnection? = nil) async throws -> AdapterRecord? {
        try await run("SELECT \(unsafe: AdapterRecord.columns) FROM hone.adapters WHERE name = \(name)", on: connection)
            .first.map(AdapterRecord.init(row:))
    }

    /// Pins, unpins, pauses or resumes (`action`), with an audit row; refuses a no-op.
    public func setFlag(_ adapter: String, action: String, reason: String?) async throws {
        try await pool.query("SELECT hone.set_adapter_flag(\(adapter), \(action), \(reason))")
    }

    // MARK: Versions

    /// History, newest first.
    public func versions(of adapter: String) async throws -> [VersionRecord] {
        try await pool.query("""
            SELECT \(unsafe: VersionRecord.columns) FROM hone.model_versions WHERE adapter = \(adapter) ORDER BY version DESC
            """).map(VersionRecord.init(row:))
    }

    public func version(_ adapter: String, _ version: Int) async throws -> VersionRecord? {
        try await pool.query("""
            SELECT \(unsafe: VersionRecord.columns) FROM hone.model_versions WHERE adapter = \(adapter) AND version = \(version)
            """).first.map(VersionRecord.init(row:))
    }

    /// The stored bytes of an accepted version and the SHA-256 recorded with them.
    public func blob(_ adapter: String, _ version: Int) async throws -> (bytes: [UInt8], sha256: String)? {
        let rows = try await pool.query("""
            SELECT blob, blob_sha256 FROM hone.model_versions
            WHERE adapter = \(adapter) AND version = \(version) AND blob IS NOT NULL
            """)
        guard let row = rows.first else { return nil }
        return (try row.decode("blob", as: Bytea.self).bytes, try row.decode("blob_sha256"))
    }

    /// Serving-state changes of an adapter, oldest first.
    public func events(of adapter: String) async throws -> [AdapterEvent] {
        try await pool.query("""
            SELECT id, adapter, action, from_version, to_version, actor, reason, at FROM hone.adapter_events
            WHERE adapter = \(adapter) ORDER BY id
            """).map(AdapterEvent.init(row:))
    }

    /// Makes `version` active (`rollback` or `activate`); the database refuses missing,
    /// rejected or other-base versions with the reason, changing nothing.
    public func activate(_ adapter: String, version: Int, action: String = "activate", reason: String?) async throws {
        try await pool.query("SELECT hone.activate_version(\(adapter), \(version), \(action), \(reason))")
    }

    /// Pins the adapter, first making `version` active when given and not active already;
    /// one transaction, so a refused activation pins nothing.
    public func pin(_ adapter: String, version: Int?, reason: String?) async throws {
        try await pool.transaction { tx in
            if let version {
                let active: Int? = try await tx.query("SELECT active_version FROM hone.adapters WHERE name = \(adapter)")
                    .first?.decodeIfPresent("active_version")
                if active != version {
                    try await tx.query("SELECT hone.activate_version(\(adapter), \(version), 'activate', \(reason))")
                }
            }
            try await tx.query("SELECT hone.set_adapter_flag(\(adapter), 'pin', \(reason))")
        }
    }

    /// Who made each version active, and when (the latest such change per version).
    public func activations(of adapter: String) async throws -> [Int: (actor: String, at: Date)] {
        let rows = try await pool.query("""
            SELECT DISTINCT ON (to_version) to_version, actor, at FROM hone.adapter_events
            WHERE adapter = \(adapter) AND action IN ('publish', 'rollback', 'activate')
              AND to_version IS NOT NULL AND to_version IS DISTINCT FROM from_version
            ORDER BY to_version, id DESC
            """)
        var out: [Int: (actor: String, at: Date)] = [:]
        for row in rows { out[try row.decode("to_version")] = (try row.decode("actor"), try row.decode("at")) }
        return out
    }

    /// The version active before the current one (the default target of a rollback): the
    /// `from` of the latest change that made the current version active.
    public func previousVersion(of adapter: String) async throws -> Int? {
        let rows = try await pool.query("""
            SELECT e.from_version FROM hone.adapter_events e JOIN hone.adapters a ON a.name = e.adapter
            WHERE e.adapter = \(adapter) AND e.action IN ('publish', 'rollback', 'activate')
              AND e.to_version = a.active_version AND e.from_version IS NOT NULL
              AND e.from_version <> e.to_version
            ORDER BY e.id DESC LIMIT 1
            """)
        return try rows.first?.decodeIfPresent("from_version")
    }

    /// Records a candidate inside the caller's transaction (which also completes its jobs):
    /// takes the next version number under the adapter's row lock, stores blob and metrics,
    /// and activates an accepted candidate unless the adapter is pinned. Returns the
    /// version number and whether it became active.
    public func record(_ candidate: VersionCandidate, actor: String, on connection: PostgresConnection) async throws -> (version: Int, activated: Bool) {
        let lock = try await connection.query("SELECT active_version, pinned FROM hone.adapters WHERE name = \(candidate.adapter) FOR UPDATE")
        guard let adapter = lock.first else { throw PostgresError(kind: .server, sqlState: "P0002", message: "adapter \"\(candidate.adapter)\" does not exist") }
        let active: Int? = try adapter.decodeIfPresent("active_version")
        let pinned: Bool = try adapter.decode("pinned")
        // A candidate is trained on a parent; if the active version changed since (an operator's
        // rollback, or another learner that took over a frozen one's jobs), activating it would
        // undo that change, so it is refused and its jobs run again on the new active version.
        guard candidate.parentVersion == active else {
            throw StaleCandidate(adapter: candidate.adapter, parent: candidate.parentVersion, active: active)
        }
        let next: Int = try await connection.query("""
            SELECT coalesce(max(version), 0) + 1 AS next FROM hone.model_versions WHERE adapter = \(candidate.adapter)
            """)[0].decode("next")
        try await connection.query("""
            INSERT INTO hone.model_versions (adapter, version, parent_version, status, base_model_sha256, blob, blob_sha256,
                                             metrics, job_ids, examples, reason)
            VALUES (\(candidate.adapter), \(next), \(candidate.parentVersion), \(candidate.accepted ? "accepted" : "rejected"),
                    \(candidate.baseModelSHA256), \(candidate.accepted ? candidate.blob.map { Bytea($0.bytes) } : nil),
                    \(candidate.accepted ? candidate.blob?.sha256 : nil), \(JSONText(candidate.metrics.jsonText))::jsonb,
                    \(candidate.jobIDs)::bigint[], \(candidate.examples), \(candidate.reason))
            """)
        let activate = candidate.accepted && !pinned
        if activate {
            try await connection.query("UPDATE hone.adapters SET active_version = \(next), updated_at = now() WHERE name = \(candidate.adapter)")
        }
        // Rejected and pinned candidates leave an event too, so the history tells the whole story.
        try await connection.query("""
            INSERT INTO hone.adapter_events (adapter, action, from_version, to_version, actor, reason)
            VALUES (\(candidate.adapter), \(candidate.accepted ? "publish" : "reject"), \(active),
                    \(activate ? next : active), \(actor),
                    \(candidate.accepted ? (pinned ? "pinned: candidate v\(next) recorded, not activated" : nil) : candidate.reason))
            """)
        return (next, activate)
    }
}

/// A candidate whose parent is no longer the adapter's active version: recording it would
/// undo whatever changed the active version while it trained.
public struct StaleCandidate: Error, CustomStringConvertible, Sendable {
    public let adapter: String
    public let parent: Int?
    public let active: Int?
    public init(adapter: String, parent: Int?, active: Int?) {
        self.adapter = adapter
        self.parent = parent
        self.active = active
    }
    public var description: String {
        "\(adapter)'s active version changed from \(parent.map { "v\($0)" } ?? "the base model") to "
            + "\(active.map { "v\($0)" } ?? "the base model") while the candidate trained; its jobs run again on the new one"
    }
}
