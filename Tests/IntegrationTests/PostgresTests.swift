import EmbeddedPostgres
import Foundation
import Postgres
import Testing

@Suite("Postgres layer: types, errors, transactions, cancellation, reconnect", .timeLimit(.minutes(3)))
struct PostgresTests {
    @Test("bound values round-trip through every decoded type")
    func typesRoundTrip() async throws {
        try await TestDatabase.with { url in
            let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { c.close() }
            let when = Date(timeIntervalSince1970: 1_795_000_000.123456)
            let blob = Bytea((0...255).map(UInt8.init) + [0, 0, 92, 120])
            let text = "quote ' double \" backslash \\ comma , braces {} emoji 👩‍💻 NUL-free"
            let row = try await c.query("""
                SELECT \(text)::text AS t, \(Int32(-7))::integer AS i, \(Int64.max)::bigint AS b, \(true)::boolean AS yes,
                       \(false)::boolean AS no, \(0.1)::float8 AS f, \(Double.infinity)::float8 AS inf,
                       \(when)::timestamptz AS ts, \(JSONText(#"{"a": [1, 2.5, "x"]}"#))::jsonb AS j, \(blob)::bytea AS bin,
                       \(["a,b", "c\"d", "NULL", ""])::text[] AS arr, \([1, 2, 3])::bigint[] AS nums,
                       \(String?.none)::text AS nothing
                """)[0]
            #expect(try row.decode("t") == text)
            #expect(try row.decode("i") == Int32(-7))
            #expect(try row.decode("b") == Int64.max)
            #expect(try row.decode("yes") == true)
            #expect(try row.decode("no") == false)
            #expect(try row.decode("f") == 0.1)
            #expect(try row.decode("inf") == Double.infinity)
            let ts: Date = try row.decode("ts")
            #expect(abs(ts.timeIntervalSince1970 - when.timeIntervalSince1970) < 1e-6)
            #expect(try row.decode("j", as: JSONText.self).text == #"{"a": [1, 2.5, "x"]}"#)
            #expect(try row.decode("bin", as: Bytea.self) == blob)
            #expect(try row.decode("arr", as: [String].self) == ["a,b", "c\"d", "NULL", ""])
            #expect(try row.decode("nums", as: [Int].self) == [1, 2, 3])
            #expect(try row.decodeIfPresent("nothing", as: String.self) == nil)
            #expect(throws: PostgresError.self) { try row.decode("nothing", as: String.self) }
            #expect(throws: PostgresError.self) { try row.decode("t", as: Int.self) }
            // Interpolated text is never SQL.
            let injection = "'; DROP TABLE hone.jobs; --"
            #expect(try await c.query("SELECT \(injection)::text AS s")[0].decode("s") == injection)
            #expect(try await c.query("SELECT count(*) AS n FROM hone.jobs")[0].decode("n", as: Int.self) == 0)
        }
    }

    @Test("errors carry SQLSTATE, constraint and hint; the password never shows")
    func errors() async throws {
        try await TestDatabase.with { url in
            let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { c.close() }
            try await c.execute("CREATE TABLE t (id int PRIMARY KEY)")
            try await c.execute("INSERT INTO t VALUES (1)")
            do {
                try await c.execute("INSERT INTO t VALUES (\(1))")
                Issue.record("duplicate insert succeeded")
            } catch let e as PostgresError {
                #expect(e.isUniqueViolation)
                #expect(e.constraint == "t_pkey")
                #expect(e.kind == .server)
                #expect(!e.description.contains("(id)=(1)"), "row values stay out of the description")
                #expect(e.detail?.contains("(id)=(1)") == true)
            }
            await #expect(throws: PostgresError.self) { try await c.execute("SELEC 1") }
            // The connection is still usable after errors.
            #expect(try await c.query("SELECT 2 AS two")[0].decode("two", as: Int.self) == 2)

            let secret = "postgresql://hone:s3cr3t-pw@/nodb?host=/nonexistent-hone-dir"
            do {
                _ = try await PostgresConnection.connect(secret, logger: TestDatabase.logger)
                Issue.record("connected to nowhere")
            } catch let e as PostgresError {
                #expect(e.kind == .connection)
                #expect(!e.description.contains("s3cr3t-pw"))
                #expect(e.description.contains("hone:***@"))
            }
            #expect(ConnectionString.redacted("host=x password=hunter2 user=u") == "host=x password=*** user=u")
        }
    }

    @Test("a thrown error rolls the transaction back")
    func transactions() async throws {
        try await TestDatabase.with { url in
            let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { c.close() }
            try await c.execute("CREATE TABLE t (x int)")
            struct Oops: Error {}
            await #expect(throws: Oops.self) {
                try await c.transaction { tx in
                    try await tx.execute("INSERT INTO t VALUES (1)")
                    throw Oops()
                }
            }
            _ = try await c.transaction { tx in try await tx.execute("INSERT INTO t VALUES (2)") }
            #expect(try await c.query("SELECT array_agg(x) AS xs FROM t")[0].decode("xs", as: [Int].self) == [2])
        }
    }

    @Test("cancelling the task cancels the running statement on the server")
    func cancellation() async throws {
        try await TestDatabase.with { url in
            let c = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { c.close() }
            let started = ContinuousClock.now
            let sleeper = Task { try await c.execute("SELECT pg_sleep(60)") }
            let observer = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { observer.close() }
            // Wait until the server runs it, then cancel.
            let reached1 = try await TestDatabase.eventually {
                try await observer.query("SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")[0]
                    .decode("n", as: Int.self) == 1
            }
            #expect(reached1)
            sleeper.cancel()
            await #expect(throws: CancellationError.self) { try await sleeper.value }
            #expect(ContinuousClock.now - started < .seconds(30), "did not wait for pg_sleep(60)")
            #expect(try await c.query("SELECT 1 AS one")[0].decode("one", as: Int.self) == 1, "connection still usable")
        }
    }

    @Test("a pool replaces a connection whose backend was terminated")
    func poolReconnects() async throws {
        try await TestDatabase.with { url in
            let pool = PostgresPool(conninfo: url, size: 1, logger: TestDatabase.logger)
            let pid: Int32 = try await pool.query("SELECT pg_backend_pid() AS pid")[0].decode("pid")
            let admin = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { admin.close() }
            try await admin.execute("SELECT pg_terminate_backend(\(pid))")
            // The first statement on the dead connection fails as a connection error…
            do {
                try await pool.query("SELECT 1")
            } catch let e as PostgresError {
                #expect(e.isConnectionFailure, "\(e)")
            }
            // …and the pool opens a new one for the next.
            let newPid: Int32 = try await pool.query("SELECT pg_backend_pid() AS pid")[0].decode("pid")
            #expect(newPid != pid)
            await pool.close()
        }
    }

    @Test("a private cluster initializes, starts on its socket (and a loopback port), and stops")
    func clusterLifecycle() async throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hone-cl-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        let port = 20_000 + Int(getpid() % 20_000)
        let cluster = try PostgresCluster(directory: dir, options: .init(port: port, durable: false))
        try cluster.initialize(logger: TestDatabase.logger)
        try cluster.initialize(logger: TestDatabase.logger)  // idempotent
        try cluster.start(logger: TestDatabase.logger)
        #expect(cluster.isRunning)
        let viaSocket = try await PostgresConnection.connect(cluster.url(), logger: TestDatabase.logger)
        let user: String = try await viaSocket.query("SELECT current_user AS u")[0].decode("u")
        #expect(user == "postgres")
        viaSocket.close()
        let viaTCP = try await PostgresConnection.connect("postgresql://postgres@127.0.0.1:\(port)/postgres", logger: TestDatabase.logger)
        #expect(try await viaTCP.query("SELECT 1 AS one")[0].decode("one", as: Int.self) == 1)
        viaTCP.close()
        try cluster.stop(logger: TestDatabase.logger)
        #expect(!cluster.isRunning)
        // Restart keeps the data.
        try cluster.start(logger: TestDatabase.logger)
        #expect(cluster.isRunning)
        try cluster.stop(logger: TestDatabase.logger)
    }
}
