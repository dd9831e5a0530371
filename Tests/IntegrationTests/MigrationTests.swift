import Foundation
import HoneDaemon
import Postgres
import Testing

@Suite("Migrations", .timeLimit(.minutes(3)))
struct MigrationTests {
    func tempMigrations(_ files: [String: String]) throws -> URL {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hone-mig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return dir
    }

    @Test("the project's migrations are recorded once and re-running applies nothing")
    func projectMigrationsIdempotent() async throws {
        try await TestDatabase.with { url in
            let applied = try await HoneDatabase.prepare(conninfo: url, paths: TestDatabase.paths, logger: TestDatabase.logger)
            #expect(applied.isEmpty, "the template was migrated already")
            let rows = try await PostgresPool(conninfo: url, size: 1, logger: TestDatabase.logger)
                .query("SELECT file_name FROM hone.schema_migrations ORDER BY version")
            let onDisk = try FileManager.default.contentsOfDirectory(atPath: TestDatabase.paths.migrations.path)
                .filter { $0.hasSuffix(".sql") }.sorted()
            #expect(try rows.map { try $0.decode("file_name", as: String.self) } == onDisk)
        }
    }

    @Test("a failing migration leaves the schema as it was and names the file and statement")
    func failingMigrationRollsBack() async throws {
        try await TestDatabase.with { url in
            let dir = try tempMigrations([
                "0301_ok.sql": "CREATE TABLE hone.ok (x int);",
                "0302_bad.sql": """
                    -- creates a table, then fails
                    CREATE TABLE hone.partial (x int);
                    CREATE FUNCTION hone.f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;

                    INSERT INTO hone.nope VALUES (1);
                    """,
            ])
            defer { try? FileManager.default.removeItem(at: dir) }
            let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { c.close() }
            let migrator = try Migrator(directory: dir, schema: "hone")
            do {
                try await migrator.migrate(on: c, logger: TestDatabase.logger)
                Issue.record("the bad migration was applied")
            } catch let e as MigrationError {
                #expect(e.fileName == "0302_bad.sql")
                #expect(e.statementNumber == 3)
                #expect(e.line == 5)
                #expect(e.description.contains("hone.nope"))
                #expect(e.description.contains("nothing of this file was applied"))
            }
            let tables = try await c.query("""
                SELECT array_agg(tablename::text ORDER BY tablename) AS t FROM pg_tables
                WHERE schemaname = 'hone' AND tablename IN ('ok', 'partial')
                """)[0].decode("t", as: [String].self)
            #expect(tables == ["ok"], "0001 applied, nothing of 0002")
            #expect(try await c.query("SELECT count(*) AS n FROM pg_proc WHERE proname = 'f'")[0].decode("n", as: Int.self) == 0)
        }
    }

    @Test("an applied migration that was edited is refused")
    func editedMigrationRefused() async throws {
        try await TestDatabase.with { url in
            let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { c.close() }
            let v1 = try tempMigrations(["0100_t.sql": "CREATE TABLE hone.t100 (x int);"])
            defer { try? FileManager.default.removeItem(at: v1) }
            try await Migrator(directory: v1).migrate(on: c, logger: TestDatabase.logger)
            let v2 = try tempMigrations(["0100_t.sql": "CREATE TABLE hone.t100 (x bigint);"])
            defer { try? FileManager.default.removeItem(at: v2) }
            await #expect(throws: MigrationError.self) { try await Migrator(directory: v2).migrate(on: c, logger: TestDatabase.logger) }
        }
    }

    @Test("concurrent migrators apply each file exactly once")
    func concurrentMigrators() async throws {
        try await TestDatabase.with { url in
            let dir = try tempMigrations([
                "0200_a.sql": "CREATE TABLE hone.a200 (x int); SELECT pg_sleep(0.2);",
                "0201_b.sql": "CREATE TABLE hone.b201 (x int);",
            ])
            defer { try? FileManager.default.removeItem(at: dir) }
            let migrator = try Migrator(directory: dir)
            let counts = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
                        defer { c.close() }
                        return try await migrator.migrate(on: c, logger: TestDatabase.logger).count
                    }
                }
                var all: [Int] = []
                for try await n in group { all.append(n) }
                return all
            }
            #expect(counts.reduce(0, +) == 2)
            #expect(counts.filter { $0 > 0 }.count == 1)
        }
    }
}
