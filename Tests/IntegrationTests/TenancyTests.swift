import Foundation
import Postgres
import Queue
import Synchronization
import Testing

/// Two tenants' applications on one database: each submits to and reads only its own
/// adapters and the shared ones, through every table, view and function it can reach.
@Suite("Tenancy: SQL", .timeLimit(.minutes(3)))
struct TenancyTests {
    static let counter = Atomic<Int>(0)

    /// Roles are global to the cluster that every test database shares: unique names.
    static func roleNames() -> (String, String) {
        let n = counter.add(1, ordering: .relaxed).newValue
        return ("tenant_a_\(getpid())_\(n)", "tenant_b_\(getpid())_\(n)")
    }

    @Test("two tenants: each submits to and sees only its own and the shared adapters, over every table, view and function; injections stay data")
    func twoTenants() async throws {
        let (ta, tb) = Self.roleNames()
        try await TestDatabase.withQueue { url, queue in
            let admin = queue.pool
            for role in [ta, tb] { try await admin.query(PostgresQuery(unsafeSQL: "CREATE ROLE \(role) NOLOGIN IN ROLE hone_feedback")) }
            defer {
                Task { for role in [ta, tb] { _ = try? await admin.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(role)")) } }
            }
            try await admin.query("INSERT INTO hone.adapters (name, owner_role) VALUES ('a', \(ta)), ('b', \(tb)), ('shared', NULL)")
            try await admin.query("""
                INSERT INTO hone.completions (id, adapter, messages, response, confidence, lowest_token_probability) VALUES
                    ('cmpl-a', 'a', '[{"role": "user", "content": "Capital of Zorbania?"}]', 'Zorb.', 0.3, 0.01),
                    ('cmpl-b', 'b', '[{"role": "user", "content": "Capital of Vexis?"}]', 'Vex.', 0.2, 0.01),
                    ('cmpl-s', 'shared', '[{"role": "user", "content": "Capital of Eskaland?"}]', 'Esk.', 0.4, 0.02)
                """)
            try await admin.query("INSERT INTO hone.feedback (adapter, prompt, correction) VALUES ('b', 'Code of b?', 'B-1')")

            let a = try await TestDatabase.connect(url, as: ta)
            defer { a.close() }
            // What A reads: its adapter and the shared one, nothing of B's.
            #expect(try await a.query("SELECT name FROM hone.adapters ORDER BY name").map { try $0.decode("name", as: String.self) } == ["a", "shared"])
            #expect(try await a.query("SELECT completion_id FROM hone.review_queue ORDER BY 1").map { try $0.decode("completion_id", as: String.self) }
                    == ["cmpl-a", "cmpl-s"])

            // What A submits: to its adapter and the shared one; to B's refused with one sentence.
            _ = try await a.query("INSERT INTO hone.feedback (adapter, prompt, correction) VALUES ('a', 'Code of a?', 'A-1') RETURNING id")
            _ = try await a.query("INSERT INTO hone.feedback (completion_id, rating) VALUES ('cmpl-s', 1) RETURNING id")
            _ = try await a.query("SELECT hone.submit_task('a', 'Ticket id?', '{\"type\": \"exact\", \"answer\": \"T-1\"}')")
            _ = try await a.query("SELECT hone.add_document('shared', 'Refunds take 14 days.')")
            for sql: PostgresQuery in [
                "INSERT INTO hone.feedback (adapter, prompt, correction) VALUES ('b', 'Code of b?', 'A says')",
                "INSERT INTO hone.feedback (completion_id, correction) VALUES ('cmpl-b', 'A answers B''s completion')",
                "SELECT hone.submit_task('b', 'Ticket id?', '{\"type\": \"exact\", \"answer\": \"T-1\"}')",
                "SELECT hone.add_document('b', 'A writes into B.')",
                "SELECT hone.add_document('a'' OR ''1''=''1', 'injected adapter name')",
            ] {
                let e = await TestDatabase.failure(a, sql)
                #expect(e?.sqlState == "42501", "\(sql.sql): \(e?.description ?? "succeeded")")
                #expect(e?.message.contains("does not exist or is not yours") == true, "\(e?.message ?? "")")
            }
            // Statuses: A's own submissions and the shared adapter's, never B's.
            let statuses = try await a.query("SELECT adapter FROM hone.submission_status ORDER BY adapter").map { try $0.decode("adapter", as: String.self) }
            #expect(statuses == ["a", "a", "shared", "shared"])
            #expect(try await a.query("SELECT id FROM hone.feedback").count == 2)
            // The answered completion left A's queue; B's item is still in B's.
            #expect(try await a.query("SELECT completion_id FROM hone.review_queue").map { try $0.decode("completion_id", as: String.self) } == ["cmpl-a"])

            // Everything else is closed to A.
            for sql: PostgresQuery in [
                "SELECT * FROM hone.completions", "SELECT * FROM hone.jobs", "SELECT * FROM hone.model_versions",
                "SELECT * FROM hone.training_examples", "SELECT * FROM hone.adapter_events", "SELECT * FROM hone.replicas",
                "SELECT * FROM hone.anchor_answers", "SELECT * FROM hone.reference_targets", "SELECT * FROM hone.queue_depth", "SELECT * FROM hone.adapter_status",
                "SELECT * FROM hone.api_keys", "SELECT * FROM hone.version_steps", "SELECT * FROM hone.tasks", "SELECT * FROM hone.documents",
                "SELECT prompt FROM hone.feedback",
                "UPDATE hone.adapters SET owner_role = NULL WHERE name = 'b'",
                "UPDATE hone.feedback SET correction = 'x'", "DELETE FROM hone.feedback",
                "SELECT hone.activate_version('b', 1, 'rollback')", "SELECT hone.set_adapter_flag('b', 'pause')",
                "SELECT hone.create_adapter('mine')",
            ] {
                let e = await TestDatabase.failure(a, sql)
                #expect(e?.sqlState == "42501", "\(sql.sql): \(e?.description ?? "succeeded")")
            }

            // Injection attempts through text fields are stored as text and change nothing.
            let prompt = "x'); DROP TABLE hone.jobs; --", correction = "'; UPDATE hone.adapters SET owner_role = NULL; --"
            _ = try await a.query("INSERT INTO hone.feedback (adapter, prompt, correction) VALUES ('a', \(prompt), \(correction)) RETURNING id")
            let stored = try await admin.query("SELECT prompt, correction FROM hone.feedback WHERE prompt = \(prompt)")
            #expect(stored.count == 1)
            #expect(try stored.first?.decode("correction", as: String.self) == correction)
            #expect(try await admin.query("SELECT count(*) AS n FROM hone.adapters WHERE owner_role IS NOT NULL")[0].decode("n", as: Int.self) == 2)
            #expect(try await admin.query("SELECT count(*) AS n FROM hone.jobs")[0].decode("n", as: Int.self) == 6)

            // B, symmetrically; the operator sees every tenant.
            let b = try await TestDatabase.connect(url, as: tb)
            defer { b.close() }
            #expect(try await b.query("SELECT name FROM hone.adapters ORDER BY name").map { try $0.decode("name", as: String.self) } == ["b", "shared"])
            #expect(try await b.query("SELECT DISTINCT adapter FROM hone.submission_status ORDER BY 1").map { try $0.decode("adapter", as: String.self) }
                    == ["b", "shared"])
            #expect(try await b.query("SELECT completion_id FROM hone.review_queue").map { try $0.decode("completion_id", as: String.self) } == ["cmpl-b"])
            let e = await TestDatabase.failure(b, "INSERT INTO hone.feedback (adapter, prompt, rating) VALUES ('a', 'q', 1)")
            #expect(e?.sqlState == "42501")
            let op = try await TestDatabase.connect(url, as: "hone_operator")
            defer { op.close() }
            #expect(try await op.query("SELECT name FROM hone.adapters").count == 3)
            #expect(try await op.query("SELECT DISTINCT adapter FROM hone.submission_status").count == 3)
            #expect(try await op.query("SELECT completion_id FROM hone.review_queue").count == 2)
        }
    }
}
