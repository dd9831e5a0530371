import Foundation
import JSON
import Postgres
import Queue
import Testing

@Suite("SQL API: roles, feedback, tasks, documents, status", .timeLimit(.minutes(3)))
struct SQLAPITests {
    func createAdapter(_ queue: JobQueue, _ name: String) async throws {
        try await queue.pool.query("INSERT INTO hone.adapters (name) VALUES (\(name))")
    }

    @Test("a feedback INSERT by hone_feedback enqueues exactly one job; the role cannot touch jobs, versions or other schemas")
    func feedbackRole() async throws {
        try await TestDatabase.withQueue { url, queue in
            try await createAdapter(queue, "support")
            try await queue.pool.query("CREATE TABLE public.secrets (x int)")
            let app = try await TestDatabase.connect(url, as: "hone_feedback")
            defer { app.close() }
            let id: Int64 = try await app.query("""
                INSERT INTO hone.feedback (adapter, prompt, correction)
                VALUES ('support', 'What is the capital of Zorbia?', 'Quellen') RETURNING id
                """)[0].decode("id")
            let jobs = try await queue.pool.query("SELECT kind, adapter, args::text AS args, state FROM hone.jobs")
            #expect(jobs.count == 1)
            #expect(try jobs[0].decode("kind", as: String.self) == "feedback")
            #expect(try jobs[0].decode("state", as: JobState.self) == .available)
            let args = try JSONValue(parsing: try jobs[0].decode("args", as: String.self))
            #expect(args == .object(["feedback_id": .int(Int(id)), "adapter": .string("support"),
                                     "prompt": .string("What is the capital of Zorbia?"), "correction": .string("Quellen")]))
            #expect(TestDatabase.catalogue.rejection(kind: "feedback", payload: args) == nil, "the trigger's payload fits the schema")

            // Its status is readable through the view.
            let status = try await app.query("SELECT status FROM hone.submission_status WHERE kind = 'feedback' AND id = \(id)")
            #expect(try status[0].decode("status", as: String.self) == "queued")

            // Everything else is closed to it.
            for sql: PostgresQuery in [
                "SELECT * FROM hone.jobs",
                "UPDATE hone.jobs SET state = 'cancelled'",
                "DELETE FROM hone.jobs",
                "INSERT INTO hone.jobs (kind, args, max_attempts) VALUES ('feedback', '{}', 1)",
                "SELECT * FROM hone.model_versions",
                "UPDATE hone.adapters SET paused = true",
                "SELECT * FROM hone.feedback",
                "SELECT * FROM hone.completions",
                "SELECT * FROM public.secrets",
                "CREATE TABLE public.mine (x int)",
                "SELECT hone.enqueue('feedback', 'support', '{}'::jsonb)",
                "SELECT hone.retry_delay(1, 1, 1)",
            ] {
                let e = await TestDatabase.failure(app, sql)
                #expect(e?.sqlState == "42501", "\(sql.sql): \(e?.description ?? "succeeded")")
            }
            let count = try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs WHERE state = 'available'")[0]
            #expect(try count.decode("n", as: Int.self) == 1)
        }
    }

    @Test("submit_task and add_document enqueue a job each, usable by hone_feedback")
    func taskAndDocument() async throws {
        try await TestDatabase.withQueue { url, queue in
            try await createAdapter(queue, "math")
            let app = try await TestDatabase.connect(url, as: "hone_feedback")
            defer { app.close() }
            let task: Int64 = try await app.query("""
                SELECT hone.submit_task('math', 'What is 12 * 12?', '{"type": "numeric", "answer": 144}', '144') AS id
                """)[0].decode("id")
            let doc: Int64 = try await app.query("SELECT hone.add_document('math', 'A dozen dozens is a gross: 144.') AS id")[0].decode("id")
            let jobs = try await queue.pool.query("SELECT kind, args::text AS args FROM hone.jobs ORDER BY id")
            #expect(try jobs.map { try $0.decode("kind", as: String.self) } == ["task", "document"])
            for row in jobs {
                let kind: String = try row.decode("kind")
                let args = try JSONValue(parsing: try row.decode("args", as: String.self))
                #expect(TestDatabase.catalogue.rejection(kind: kind, payload: args) == nil)
            }
            let statuses = try await app.query("SELECT kind, id, status FROM hone.submission_status ORDER BY kind")
            #expect(try statuses.map { try $0.decode("status", as: String.self) } == ["queued", "queued"])
            #expect(try statuses.map { try $0.decode("id", as: Int64.self) } == [doc, task])
        }
    }

    @Test("CHECK constraints reject bad submissions with messages a person understands")
    func constraintsExplain() async throws {
        try await TestDatabase.withQueue { url, queue in
            try await createAdapter(queue, "support")
            let app = try await TestDatabase.connect(url, as: "hone_feedback")
            defer { app.close() }
            let big = String(repeating: "x", count: 20_000)
            let cases: [(PostgresQuery, String)] = [
                ("INSERT INTO hone.feedback (adapter, prompt, rating) VALUES ('support', 'hi', 5)",
                 "rating must be -1 (thumbs down) or 1 (thumbs up)"),
                ("INSERT INTO hone.feedback (adapter, prompt, correction) VALUES ('support', 'hi', '   ')",
                 "correction must not be empty"),
                ("INSERT INTO hone.feedback (adapter, prompt) VALUES ('support', 'hi')",
                 "feedback needs a rating or a correction"),
                ("INSERT INTO hone.feedback (adapter, rating) VALUES ('support', 1)",
                 "feedback needs a completion_id, a prompt or messages"),
                ("INSERT INTO hone.feedback (adapter, prompt, rating) VALUES ('nosuch', 'hi', 1)",
                 "adapter \"nosuch\" does not exist or is not yours"),
                ("INSERT INTO hone.feedback (prompt, rating) VALUES ('hi', 1)",
                 "feedback needs an adapter (or a logged completion_id)"),
                ("INSERT INTO hone.feedback (adapter, prompt, correction) VALUES ('support', 'hi', \(big))",
                 "correction must be at most 16384 bytes"),
                ("INSERT INTO hone.feedback (adapter, messages, rating) VALUES ('support', '[]', 1)",
                 "messages must be a non-empty JSON array"),
                ("SELECT hone.submit_task('support', 'hi', '{\"type\": \"vibes\"}')",
                 "unknown verifier type vibes: use exact, normalized, regex, contains, numeric, json_schema or choice"),
                ("SELECT hone.submit_task('support', '', '{\"type\": \"exact\", \"answer\": \"x\"}')",
                 "prompt must not be empty"),
                ("SELECT hone.add_document('support', '')", "document text must not be empty"),
                ("SELECT hone.add_document('ghost', 'text')", "adapter \"ghost\" does not exist or is not yours"),
            ]
            for (sql, message) in cases {
                let e = await TestDatabase.failure(app, sql)
                #expect(e?.description.contains(message) == true, "\(sql.sql.prefix(80)): \(e?.description ?? "succeeded")")
            }
            let jobs = try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs")[0].decode("n", as: Int.self)
            #expect(jobs == 0, "a rejected submission leaves no job behind")
            let bad = await TestDatabase.failure(try await TestDatabase.connect(url, as: "hone_operator"), "INSERT INTO hone.adapters (name) VALUES ('Bad Name')")
            #expect(bad?.description.contains("adapter name is 1-63 lowercase letters, digits, - or _") == true)
        }
    }

    @Test("feedback on a logged completion takes its adapter and conversation")
    func feedbackOnCompletion() async throws {
        try await TestDatabase.withQueue { url, queue in
            try await createAdapter(queue, "support")
            try await createAdapter(queue, "sales")
            try await queue.pool.query("""
                INSERT INTO hone.completions (id, adapter, version, messages, response)
                VALUES ('chatcmpl-1', 'support', NULL, '[{"role": "user", "content": "Hi"}]', 'Hello!')
                """)
            let app = try await TestDatabase.connect(url, as: "hone_feedback")
            defer { app.close() }
            try await app.query("INSERT INTO hone.feedback (completion_id, rating) VALUES ('chatcmpl-1', 1)")
            let args = try JSONValue(parsing: try await queue.pool.query("SELECT args::text AS a FROM hone.jobs")[0].decode("a", as: String.self))
            #expect(args["adapter"] == .string("support"))
            #expect(args["response"] == .string("Hello!"))
            #expect(args["messages"] == .array([.object(["role": .string("user"), "content": .string("Hi")])]))
            let e = await TestDatabase.failure(app, "INSERT INTO hone.feedback (completion_id, adapter, rating) VALUES ('chatcmpl-1', 'sales', 1)")
            #expect(e?.description.contains("was answered by adapter \"support\", not \"sales\"") == true)
        }
    }

    @Test("a submission's status follows its job to its outcome, and outlives the pruned job")
    func statusFollowsOutcome() async throws {
        try await TestDatabase.withQueue { url, queue in
            try await createAdapter(queue, "support")
            let ids: [Int64] = try await queue.pool.query("""
                INSERT INTO hone.feedback (adapter, prompt, correction)
                VALUES ('support', 'q1', 'a1'), ('support', 'q2', 'a2'), ('support', 'q3', 'a3') RETURNING id
                """).map { try $0.decode("id") }
            func status(_ id: Int64) async throws -> (String, String?, Int?) {
                let r = try await queue.pool.query("SELECT status, reason, version FROM hone.submission_status WHERE id = \(id)")[0]
                return (try r.decode("status"), try r.decodeIfPresent("reason"), try r.decodeIfPresent("version"))
            }
            let jobs = try await queue.claim(limit: 3, worker: "learner", kinds: ["feedback"], lease: .seconds(30))
            #expect(jobs.count == 3)
            #expect(try await status(ids[0]).0 == "running")
            let byFeedback = Dictionary(uniqueKeysWithValues: jobs.map { ($0.args["feedback_id"]!.intValue!, $0) })
            try await queue.complete([(byFeedback[Int(ids[0])]!.lease, .object(["outcome": .string("trained"), "version": .int(3)]))])
            try await queue.complete([(byFeedback[Int(ids[1])]!.lease, .object(["outcome": .string("dropped"), "reason": .string("no verified target")]))])
            try await queue.fail(byFeedback[Int(ids[2])]!.lease, error: "model crashed")
            #expect(try await status(ids[0]) == ("trained", nil, 3))
            #expect(try await status(ids[1]) == ("dropped", "no verified target", nil))
            let retrying = try await status(ids[2])
            #expect(retrying.0 == "retrying" && retrying.1 == "model crashed")
            try await queue.pool.query("UPDATE hone.jobs SET finalized_at = now() - interval '30 days' WHERE finalized_at IS NOT NULL")
            try await queue.prune(retention: .seconds(86_400))
            #expect(try await queue.pool.query("SELECT count(*) AS n FROM hone.jobs")[0].decode("n", as: Int.self) == 1)
            #expect(try await status(ids[0]) == ("trained", nil, 3), "outcome kept after the job was pruned")
            let depth = try await queue.pool.query("SELECT kind, state, jobs FROM hone.queue_depth")
            #expect(depth.count == 1)
            #expect(try depth[0].decode("state", as: String.self) == "retryable")
        }
    }
}
