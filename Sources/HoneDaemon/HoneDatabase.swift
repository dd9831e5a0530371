import EmbeddedPostgres
import Foundation
import Logging
import Postgres
import Queue

/// Brings a database to the schema this build expects: applies pending migrations and
/// writes the job catalogue's defaults. `honed` does this at start, `honectl migrate` on
/// demand; both call this one function.
public enum HoneDatabase {
    /// Migrates and syncs the catalogue; returns the migration files applied now.
    @discardableResult
    public static func prepare(conninfo: String, paths: HonePaths, logger: Logger) async throws -> [Migration] {
        let migrator = try Migrator(directory: paths.migrations)
        let catalogue = try JobCatalogue(directory: paths.jobs)
        let connection = try await PostgresPool.connect(conninfo, timeout: .seconds(30), logger: logger)
        defer { connection.close() }
        let applied = try await migrator.migrate(on: connection, logger: logger)
        try await catalogue.sync(on: connection)
        return applied
    }

    /// Starts (creating when needed) the embedded default's private cluster under the
    /// data directory, with a database named `hone`, and returns its URL.
    public static func startEmbedded(paths: HonePaths, logger: Logger) async throws -> (PostgresCluster, String) {
        let cluster = try PostgresCluster(directory: paths.postgresDirectory)
        try cluster.initialize(logger: logger)
        try cluster.start(logger: logger)
        let admin = try await PostgresPool.connect(cluster.url(), timeout: .seconds(30), logger: logger)
        defer { admin.close() }
        let exists = try await admin.query("SELECT 1 FROM pg_database WHERE datname = 'hone'")
        if exists.isEmpty { try await admin.execute("CREATE DATABASE hone") }
        return (cluster, cluster.url(database: "hone"))
    }
}
