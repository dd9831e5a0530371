import EmbeddedPostgres
import Foundation
import HoneDaemon
import JSON
import Logging
import Postgres
import Queue
import Synchronization
import Testing

/// One private PostgreSQL cluster per test process (or `HONE_TEST_DATABASE_URL`'s server),
/// a migrated template database, and a fresh database per test copied from it, so tests
/// run in parallel and leave nothing behind.
enum TestDatabase {
    static let logger: Logger = {
        var l = Logger(label: "hone.tests")
        l.logLevel = .warning
        return l
    }()

    static let paths = HonePaths.fromEnvironment()

    /// A job kind only the tests use: any object payload, 3 attempts.
    static let echoKind = JobKind(name: "echo", maxAttempts: 3, priority: 2, leaseSeconds: 30, batchSize: 10,
                                  schema: try! JSONSchema(parsing: #"{"type": "object"}"#))

    /// The catalogue from jobs/ plus the tests' own kind.
    static let catalogue: JobCatalogue = {
        var c = try! JobCatalogue(directory: paths.jobs)
        c.register(echoKind)
        return c
    }()

    private static let counter = Atomic<Int>(0)
    private static let stopAtExit = Mutex<PostgresCluster?>(nil)

    /// The server's admin URL, the template's name; built once.
    private static let server = Task<String, Error> {
        let adminURL: String
        if let url = ProcessInfo.processInfo.environment["HONE_TEST_DATABASE_URL"] {
            adminURL = url
        } else {
            let base = ProcessInfo.processInfo.environment["HONE_TEST_TMP"] ?? NSTemporaryDirectory()
            let dir = URL(fileURLWithPath: base).appendingPathComponent("hone-pg-\(getpid())")
            try? FileManager.default.removeItem(at: dir)
            // Throwaway: no fsync; and world-traversable parents for the server user.
            let cluster = try PostgresCluster(directory: dir, options: .init(durable: false))
            try cluster.initialize(logger: logger)
            try cluster.start(logger: logger)
            stopAtExit.withLock { $0 = cluster }
            atexit {
                if let cluster = TestDatabase.stopAtExit.withLock({ $0 }) {
                    try? cluster.stop(logger: TestDatabase.logger)
                    try? FileManager.default.removeItem(at: cluster.directory)
                }
            }
            adminURL = cluster.url()
        }
        let admin = try await PostgresConnection.connect(adminURL, logger: logger)
        defer { admin.close() }
        try await admin.execute("DROP DATABASE IF EXISTS hone_template")
        try await admin.execute("CREATE DATABASE hone_template")
        let templateURL = url(adminURL, database: "hone_template")
        try await HoneDatabase.prepare(conninfo: templateURL, paths: paths, logger: logger)
        let template = try await PostgresConnection.connect(templateURL, logger: logger)
        try await catalogue.sync(on: template)
        template.close()
        return adminURL
    }

    /// Replaces the database of a `postgresql://authority/db?…` URL.
    static func url(_ adminURL: String, database: String) -> String {
        let afterScheme = adminURL.range(of: "://")!.upperBound
        guard let pathStart = adminURL[afterScheme...].firstIndex(of: "/") else { return adminURL + "/" + database }
        let rest = adminURL[adminURL.index(after: pathStart)...]
        let query = rest.firstIndex(of: "?").map { String(rest[$0...]) } ?? ""
        return String(adminURL[...pathStart]) + database + query
    }

    /// Runs `body` with the URL of a fresh migrated database, dropped afterwards.
    static func with<T>(_ body: (String) async throws -> T) async throws -> T {
        let adminURL = try await server.value
        let name = "hone_t\(getpid())_\(counter.add(1, ordering: .relaxed).newValue)"
        let admin = try await PostgresConnection.connect(adminURL, logger: logger)
        defer { admin.close() }
        try await admin.execute(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name) TEMPLATE hone_template"))
        do {
            let result = try await body(url(adminURL, database: name))
            try await admin.execute(PostgresQuery(unsafeSQL: "DROP DATABASE \(name) WITH (FORCE)"))
            return result
        } catch {
            _ = try? await admin.execute(PostgresQuery(unsafeSQL: "DROP DATABASE \(name) WITH (FORCE)"))
            throw error
        }
    }

    /// A connection acting as `role` (SET ROLE: privileges, policies and hone.caller() as for a login of it).
    static func connect(_ url: String, as role: String) async throws -> PostgresConnection {
        let c = try await PostgresConnection.connect(url, logger: logger)
        try await c.execute(PostgresQuery(unsafeSQL: "SET ROLE \(role)"))
        return c
    }

    /// The error a statement fails with; records an issue when it succeeds.
    static func failure(_ c: PostgresConnection, _ sql: PostgresQuery) async -> PostgresError? {
        do {
            try await c.query(sql)
            Issue.record("expected \(sql.sql) to fail")
            return nil
        } catch let e as PostgresError {
            return e
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    /// Polls `condition` every 10 ms until it holds; false after `timeout`. For state
    /// another task reaches asynchronously (a worker finalizing a job), never as a delay.
    static func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// A pool and a queue on a fresh database.
    static func withQueue<T>(poolSize: Int = 4, backoff: Backoff = Backoff(baseSeconds: 0, capSeconds: 0),
                             _ body: (String, JobQueue) async throws -> T) async throws -> T {
        try await with { url in
            let pool = PostgresPool(conninfo: url, size: poolSize, logger: logger)
            do {
                let result = try await body(url, JobQueue(pool: pool, backoff: backoff))
                await pool.close()
                return result
            } catch {
                await pool.close()
                throw error
            }
        }
    }
}
