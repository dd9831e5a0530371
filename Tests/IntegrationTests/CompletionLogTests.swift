import Foundation
import HoneDaemon
import JSON
import Postgres
import Server
import Testing
import Tokenizer

@Suite("Completion log", .timeLimit(.minutes(3)))
struct CompletionLogTests {
    func record(_ id: String, version: String = "base") -> CompletionRecord {
        CompletionRecord(id: id, adapter: nil, version: version, messages: [ChatMessage(role: "user", content: "Hi \(id)")],
                         response: "Hello \(id)", promptTokens: 5, completionTokens: 2, seconds: 0.25)
    }

    @Test("batched rows land in hone.completions, and feedback by completion_id takes their conversation")
    func writesAndFeedbackRefersToThem() async throws {
        try await TestDatabase.withQueue { url, queue in
            let log = CompletionLog(pool: queue.pool, logger: TestDatabase.logger)
            for i in 0..<3 { log.record(record("chatcmpl-\(i)")) }
            log.record(record("chatcmpl-v", version: "support@v41"))
            await log.flush()
            #expect(log.counters.written == 4)
            let rows = try await queue.pool.query("SELECT id, version, messages::text AS m, response, timings->>'completion_tokens' AS c FROM hone.completions ORDER BY id")
            #expect(rows.count == 4)
            #expect(try rows[0].decode("response", as: String.self) == "Hello chatcmpl-0")
            #expect(try rows[0].decodeIfPresent("version", as: Int.self) == nil)
            #expect(try rows[3].decode("version", as: Int.self) == 41)
            #expect(try JSONValue(parsing: try rows[0].decode("m", as: String.self)) ==
                    .array([.object(["role": .string("user"), "content": .string("Hi chatcmpl-0")])]))

            try await queue.pool.query("INSERT INTO hone.adapters (name) VALUES ('support')")
            let app = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { app.close() }
            try await app.execute("SET ROLE hone_feedback")
            // Served by the base model (no adapter): the feedback names the adapter to teach.
            try await app.execute("INSERT INTO hone.feedback (completion_id, adapter, rating) VALUES ('chatcmpl-1', 'support', 1)")
            let args = try JSONValue(parsing: try await queue.pool.query("SELECT args::text AS a FROM hone.jobs")[0].decode("a", as: String.self))
            #expect(args["response"] == .string("Hello chatcmpl-1"))
            #expect(args["messages"] == .array([.object(["role": .string("user"), "content": .string("Hi chatcmpl-1")])]))
            #expect(args["adapter"] == .string("support"))
        }
    }

    @Test("with the database down, record returns at once, rows wait in a bounded buffer, drops are counted")
    func databaseDown() async throws {
        let pool = PostgresPool(conninfo: "postgresql://postgres@/none?host=/nonexistent-hone-socket-dir", size: 1,
                                connectTimeout: .milliseconds(200), logger: TestDatabase.logger)
        let log = CompletionLog(pool: pool, capacity: 5, logger: TestDatabase.logger)
        // `record` is synchronous and the pool cannot connect: had it waited for the
        // database, this loop would not end. Eight rows return before any write is tried.
        for i in 0..<8 { log.record(record("c\(i)")) }
        #expect(log.counters.written == 0 && log.counters.failures == 0, "nothing was written or tried while recording")
        await log.flush()
        let counters = log.counters
        #expect(counters.written == 0)
        #expect(counters.failures == 1)
        #expect(counters.dropped == 3, "capacity 5 keeps the newest five of eight")
        await pool.close()
    }
}
