import Foundation
import JSON
import Postgres

/// One job kind the daemon accepts: its payload schema and handler defaults, read from
/// `jobs/<kind>/` (`kind.json`, `schema.json`, and example payloads under `valid/` and
/// `invalid/` that the tests use).
public struct JobKind: Sendable {
    /// The kind's name, as stored in `hone.jobs.kind`.
    public let name: String
    /// What the kind is for, for people.
    public let description: String
    /// Attempts before a failing job is discarded.
    public let maxAttempts: Int
    /// 1 (most urgent) to 4.
    public let priority: Int
    /// How long a claim holds without a heartbeat.
    public let leaseSeconds: Double
    /// How many jobs of this kind a worker claims at once.
    public let batchSize: Int
    /// The payload (`hone.jobs.args`) schema.
    public let schema: JSONSchema

    public init(name: String, description: String = "", maxAttempts: Int = 5, priority: Int = 2,
                leaseSeconds: Double = 120, batchSize: Int = 8, schema: JSONSchema) {
        self.name = name
        self.description = description
        self.maxAttempts = maxAttempts
        self.priority = priority
        self.leaseSeconds = leaseSeconds
        self.batchSize = batchSize
        self.schema = schema
    }

    /// Why `payload` is not acceptable for this kind, or nil when it is.
    public func rejection(of payload: JSONValue) -> String? {
        let failures = schema.validate(payload)
        guard !failures.isEmpty else { return nil }
        return "invalid \(name) payload: " + failures.map(\.description).joined(separator: "; ")
    }
}

/// The catalogue of job kinds: what `jobs/` holds.
public struct JobCatalogue: Sendable {
    /// Kinds by name.
    public private(set) var kinds: [String: JobKind]

    public init(kinds: [JobKind]) {
        self.kinds = Dictionary(uniqueKeysWithValues: kinds.map { ($0.name, $0) })
    }

    /// Reads every `jobs/<kind>/kind.json` + `schema.json` under `directory`.
    public init(directory: URL) throws {
        var kinds: [JobKind] = []
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: directory.path).sorted() {
            let dir = directory.appendingPathComponent(name)
            let kindFile = dir.appendingPathComponent("kind.json")
            guard fm.fileExists(atPath: kindFile.path) else { continue }
            let meta = try JSONValue(parsing: Data(contentsOf: kindFile))
            let schema: JSONSchema
            do {
                schema = try JSONSchema(try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("schema.json"))))
            } catch {
                throw JSONError(message: "jobs/\(name)/schema.json: \(error)")
            }
            guard meta["kind"]?.stringValue == name else {
                throw JSONError(message: "jobs/\(name)/kind.json must say \"kind\": \"\(name)\"")
            }
            kinds.append(JobKind(
                name: name,
                description: meta["description"]?.stringValue ?? "",
                maxAttempts: meta["max_attempts"]?.intValue ?? 5,
                priority: meta["priority"]?.intValue ?? 2,
                leaseSeconds: meta["lease_seconds"]?.doubleValue ?? 120,
                batchSize: meta["batch_size"]?.intValue ?? 8,
                schema: schema))
        }
        self.init(kinds: kinds)
    }

    /// Adds or replaces a kind.
    public mutating func register(_ kind: JobKind) {
        kinds[kind.name] = kind
    }

    /// Why `payload` is not acceptable as a job of `kind`, or nil when it is.
    public func rejection(kind: String, payload: JSONValue) -> String? {
        guard let jobKind = kinds[kind] else { return "unknown job kind \"\(kind)\"" }
        return jobKind.rejection(of: payload)
    }

    /// Writes the kinds' defaults into `hone.job_kinds`, the table SQL enqueues read.
    public func sync(on connection: PostgresConnection) async throws {
        for kind in kinds.values.sorted(by: { $0.name < $1.name }) {
            try await connection.execute("""
                INSERT INTO hone.job_kinds (kind, max_attempts, priority, lease_seconds, batch_size, schema)
                VALUES (\(kind.name), \(kind.maxAttempts)::integer, \(kind.priority)::smallint, \(kind.leaseSeconds)::float8,
                        \(kind.batchSize)::integer, \(JSONText(kind.schema.document.jsonText))::jsonb)
                ON CONFLICT (kind) DO UPDATE SET
                    max_attempts = EXCLUDED.max_attempts, priority = EXCLUDED.priority,
                    lease_seconds = EXCLUDED.lease_seconds, batch_size = EXCLUDED.batch_size,
                    schema = EXCLUDED.schema, updated_at = now()
                """)
        }
    }
}
