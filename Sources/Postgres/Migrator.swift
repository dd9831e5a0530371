import Foundation
import Logging

/// A numbered, forward-only SQL migration read from a `NNNN_name.sql` file.
public struct Migration: Sendable {
    /// The number before the first `_`.
    public let version: Int
    /// The file name, e.g. `0001_queue.sql`.
    public let fileName: String
    /// The file's text.
    public let sql: String
}

/// A migration that failed: the file, the statement, and the server's reason.
public struct MigrationError: Error, CustomStringConvertible, Sendable {
    public let fileName: String
    /// 1-based statement number within the file, when a statement failed.
    public let statementNumber: Int?
    /// 1-based line where that statement starts.
    public let line: Int?
    /// What went wrong.
    public let reason: String

    public var description: String {
        if let statementNumber, let line {
            return "migration \(fileName) failed at statement \(statementNumber) (line \(line)): \(reason); nothing of this file was applied"
        }
        return "migration \(fileName): \(reason)"
    }
}

/// Applies migrations from a directory, each in its own transaction, all under one
/// advisory lock so concurrent starters (several `honed` replicas, `honectl migrate`)
/// apply each file exactly once. Applied files are recorded with an md5 of their text in
/// `<schema>.schema_migrations`; editing an applied file is refused (forward-only).
public struct Migrator: Sendable {
    public let migrations: [Migration]
    /// The schema that holds `schema_migrations` and is created when missing.
    public let schema: String

    /// Key of the advisory lock that serializes migration runs ("hone mig" in ASCII).
    static let lockKey: Int64 = 0x686F_6E65_206D_6967

    /// Reads every `NNNN_name.sql` in `directory`, ordered by number.
    public init(directory: URL, schema: String = "hone") throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        var migrations: [Migration] = []
        for name in names where name.hasSuffix(".sql") {
            guard let prefix = name.split(separator: "_").first, let version = Int(prefix) else {
                throw MigrationError(fileName: name, statementNumber: nil, line: nil,
                                     reason: "file name must start with a number and an underscore, e.g. 0003_name.sql")
            }
            let text = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            migrations.append(Migration(version: version, fileName: name, sql: text))
        }
        migrations.sort { $0.version < $1.version }
        for (a, b) in zip(migrations, migrations.dropFirst()) where a.version == b.version {
            throw MigrationError(fileName: b.fileName, statementNumber: nil, line: nil,
                                 reason: "has the same number as \(a.fileName)")
        }
        self.migrations = migrations
        self.schema = schema
    }

    /// Applies what is not applied yet; returns the files applied by this call.
    @discardableResult
    public func migrate(on connection: PostgresConnection, logger: Logger) async throws -> [Migration] {
        try await connection.execute("SELECT pg_advisory_lock(\(Self.lockKey)::bigint)")
        do {
            let applied = try await migrateLocked(on: connection, logger: logger)
            try await connection.execute("SELECT pg_advisory_unlock(\(Self.lockKey)::bigint)")
            return applied
        } catch {
            _ = try? await connection.execute("SELECT pg_advisory_unlock(\(Self.lockKey)::bigint)")
            throw error
        }
    }

    private func migrateLocked(on connection: PostgresConnection, logger: Logger) async throws -> [Migration] {
        let quotedSchema = "\"" + schema.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        let table = "\(quotedSchema).schema_migrations"
        try await connection.execute(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(quotedSchema)"))
        try await connection.execute(PostgresQuery(unsafeSQL: """
            CREATE TABLE IF NOT EXISTS \(table) (
                version integer PRIMARY KEY,
                file_name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                applied_by text NOT NULL DEFAULT current_user
            )
            """))
        var recorded: [Int: (name: String, checksum: String)] = [:]
        for row in try await connection.query(PostgresQuery(unsafeSQL: "SELECT version, file_name, checksum FROM \(table)")) {
            recorded[try row.decode("version")] = (try row.decode("file_name"), try row.decode("checksum"))
        }
        var applied: [Migration] = []
        for migration in migrations {
            if let done = recorded[migration.version] {
                let same = try await connection.query("SELECT md5(\(migration.sql)::text) = \(done.checksum) AS same")
                guard try same[0].decode("same", as: Bool.self) else {
                    throw MigrationError(fileName: migration.fileName, statementNumber: nil, line: nil,
                                         reason: "was changed after it was applied as \(done.name); migrations are forward-only, add a new file instead")
                }
                continue
            }
            try await apply(migration, table: table, quotedSchema: quotedSchema, on: connection)
            logger.info("applied migration", metadata: ["migration.file": "\(migration.fileName)"])
            applied.append(migration)
        }
        return applied
    }

    private func apply(_ migration: Migration, table: String, quotedSchema: String, on connection: PostgresConnection) async throws {
        let script = SQLScript(migration.sql)
        try await connection.transaction { conn in
            for (index, statement) in script.statements.enumerated() {
                do {
                    try await conn.execute(PostgresQuery(unsafeSQL: statement.sql))
                } catch let error as PostgresError {
                    throw MigrationError(fileName: migration.fileName, statementNumber: index + 1,
                                         line: statement.line, reason: error.description)
                }
            }
            // Policy for every file: nothing in the schema is executable by PUBLIC; grants
            // to the roles are explicit.
            try await conn.execute(PostgresQuery(unsafeSQL: "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA \(quotedSchema) FROM PUBLIC"))
            try await conn.execute(PostgresQuery(
                unsafeSQL: "INSERT INTO \(table) (version, file_name, checksum) VALUES ($1::integer, $2, md5($3::text))",
                binds: [.text(String(migration.version)), .text(migration.fileName), .text(migration.sql)]))
        }
    }
}
