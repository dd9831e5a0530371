import Foundation
import Hashing
import JSON
import Postgres
import Queue
import Registry
import BuiltTools
import Testing
import Training

/// `honectl`'s operator commands as an operator runs them (the built binary against a real
/// database): help text, tables and JSON compared with snapshots in `Snapshots/`, and the
/// documented exit codes. `HONE_UPDATE_SNAPSHOTS=1` rewrites the snapshots.
@Suite("honectl operator commands", .enabled(if: BuiltTool("honectl") != nil), .timeLimit(.minutes(3)))
struct HonectlTests {
    static let tool = BuiltTool("honectl")
    static let snapshots = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Snapshots")

    static let commands: [[String]] = [
        [], ["status"], ["adapters"], ["adapters", "create"], ["adapters", "list"], ["versions"], ["versions", "list"],
        ["versions", "show"], ["versions", "diff"], ["rollback"], ["pin"], ["unpin"], ["pause"], ["resume"],
        ["jobs"], ["jobs", "list"], ["jobs", "show"], ["jobs", "retry"], ["jobs", "cancel"], ["jobs", "discard"],
        ["feedback", "stats"], ["review"], ["review", "list"], ["review", "answer"], ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["export"],
    ]

    /// Compares `text` with the named snapshot (times and hosts masked first).
    func expectSnapshot(_ name: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let masked = Self.mask(text)
        let file = Self.snapshots.appendingPathComponent(name + ".txt")
        if ProcessInfo.processInfo.environment["HONE_UPDATE_SNAPSHOTS"] == "1" {
            try FileManager.default.createDirectory(at: Self.snapshots, withIntermediateDirectories: true)
            try masked.write(to: file, atomically: true, encoding: .utf8)
            return
        }
        let expected = try? String(contentsOf: file, encoding: .utf8)
        #expect(expected == masked, "snapshot \(name) differs; run with HONE_UPDATE_SNAPSHOTS=1 to accept:\n\(masked)",
                sourceLocation: sourceLocation)
    }

    /// Timestamps and blob hashes change per run; the snapshot keeps their place.
    static func mask(_ text: String) -> String {
        var out = text
        for (pattern, replacement) in [(#"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?"#, "<time>"),
                                       (#"[0-9a-f]{64}"#, "<sha256>")] {
            out = out.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        return out
    }

    @Test("every operator command's help text matches its snapshot")
    func help() throws {
        for command in Self.commands {
            let r = try Self.tool!.run(command + ["--help"], environment: ["COLUMNS": "100"])
            #expect(r.status == 0, "\(command) --help exited \(r.status): \(r.err)")
            try expectSnapshot("help-" + (command.isEmpty ? "honectl" : command.joined(separator: "-")), r.out)
        }
    }

    @Test("tables and JSON of adapters, versions, rollback and pin; exit codes 0, 1 and 2")
    func outputs() async throws {
        try await TestDatabase.withQueue { url, queue in
            let env = ["HONE_DATABASE_URL": url, "COLUMNS": "100"]
            func ctl(_ args: String...) throws -> (status: Int32, out: String, err: String) {
                try Self.tool!.run(args, environment: env)
            }
            #expect(try ctl("adapters", "create", "support", "--rank", "8", "--lr", "0.001", "--reason", "new tenant").status == 0)
            let registry = Registry(pool: queue.pool)
            for (i, accepted) in [true, true, false].enumerated() {
                let bytes = Array("blob \(i)".utf8)
                _ = try await queue.pool.transaction { tx in
                    try await registry.record(VersionCandidate(
                        adapter: "support", parentVersion: i == 0 ? nil : i, accepted: accepted,
                        baseModelSHA256: String(repeating: "c", count: 64), blob: accepted ? (bytes, sha256Hex(bytes)) : nil,
                        metrics: .object(["kl_bits": .double(0.25 * Double(i + 1)), "anchor_nll_rise_bits": .double(0.01)]),
                        jobIDs: [Int64(i + 1)], examples: 4, reason: accepted ? nil : "not learned: 1 of 4 items pass"), actor: "replica-1", on: tx)
                }
            }
            try expectSnapshot("adapters-list", try ctl("adapters", "list").out)
            try expectSnapshot("adapters-list-json", try ctl("adapters", "list", "--json").out)
            try expectSnapshot("versions-list", try ctl("versions", "list", "support").out)
            try expectSnapshot("versions-list-json", try ctl("versions", "list", "support", "--json").out)
            try expectSnapshot("versions-show", try ctl("versions", "show", "support", "v2").out)

            // The operator role suffices for status, history, rollback and pin.
            try await queue.pool.query("""
                DO $$ BEGIN CREATE ROLE hone_ops_test LOGIN IN ROLE hone_operator;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$
                """)
            let operatorEnv = ["HONE_DATABASE_URL": url.replacingOccurrences(of: "://postgres@", with: "://hone_ops_test@"), "COLUMNS": "100"]
            #expect(operatorEnv["HONE_DATABASE_URL"] != url)
            func op(_ args: String...) throws -> (status: Int32, out: String, err: String) {
                try Self.tool!.run(args, environment: operatorEnv)
            }
            #expect(try op("status", "--json").status == 0)
            #expect(try op("versions", "list", "support").status == 0)
            let rollback = try op("rollback", "support", "--reason", "v2 is worse")
            #expect(rollback.status == 0 && rollback.out == "rolled back support from v2 to v1\n")
            let refused = try ctl("rollback", "support", "--to", "3")
            #expect(refused.status == 1 && refused.err.contains("rejected by the gate") && refused.out.isEmpty)
            let missing = try ctl("rollback", "support", "--to", "9")
            #expect(missing.status == 1 && missing.err == "honectl: adapter \"support\" has no version 9\n")
            #expect(try await registry.adapter("support")?.activeVersion == 1)

            let pinned = try op("pin", "support", "2", "--reason", "known good")
            #expect(pinned.out == "pinned support at v2\n", "\(pinned.err)")
            let events = try await registry.events(of: "support")
            #expect(events.suffix(3).map(\.actor) == ["hone_ops_test", "hone_ops_test", "hone_ops_test"])
            let pinnedTwice = try ctl("pin", "support")
            #expect(pinnedTwice.status == 1 && pinnedTwice.err.contains("already pinned"))
            #expect(try ctl("pause", "support").status == 0)
            try expectSnapshot("status-adapters", Self.section("ADAPTERS", of: try ctl("status").out))
            let status = try JSONValue(parsing: try ctl("status", "--json").out)
            #expect(status["adapters"]?.arrayValue?.first?["active_version"] == .int(2))
            #expect(status["adapters"]?.arrayValue?.first?["pinned"] == .bool(true))

            // Usage errors exit 2, before touching the database.
            #expect(try ctl("rollback").status == 2)
            #expect(try ctl("versions", "show", "support", "latest").status == 2)
            #expect(try ctl("jobs", "list", "--state", "sleeping").status == 2)
            #expect(try Self.tool!.run(["status"], environment: ["HONE_DATABASE_URL": ""]).status == 2)

            #expect(try JSONValue(parsing: try ctl("jobs", "list", "--json").out).arrayValue?.isEmpty == true)
            try await queue.pool.query("""
                INSERT INTO hone.feedback (adapter, prompt, correction, rating) VALUES
                  ('support', 'What is the capital of Zorbania?', 'Quellport.', NULL),
                  ('support', 'Say hi.', NULL, -1)
                """)
            let first = try #require(try await queue.jobs(limit: 10).last)
            #expect(try ctl("jobs", "cancel", "\(first.id)", "--reason", "duplicate of a ticket").status == 0)
            try expectSnapshot("jobs-list", try ctl("jobs", "list").out)
            try expectSnapshot("jobs-list-cancelled-json", try ctl("jobs", "list", "--state", "cancelled", "--json").out)
            try expectSnapshot("feedback-stats", try ctl("feedback", "stats").out)
            let jobs = try JSONValue(parsing: try ctl("jobs", "list", "--kind", "feedback", "--adapter", "support", "--json").out)
            #expect(jobs.arrayValue?.count == 2)
            #expect(try JSONValue(parsing: try ctl("jobs", "list", "--older-than", "1h", "--json").out).arrayValue?.isEmpty == true)
            let noJob = try ctl("jobs", "cancel", "42")
            #expect(noJob.status == 1 && noJob.err == "honectl: job 42 does not exist\n")
        }
    }

    /// The lines of one titled section of `honectl status`.
    static func section(_ title: String, of text: String) -> String {
        let lines = text.components(separatedBy: "\n")
        guard let start = lines.firstIndex(of: title) else { return "" }
        let rest = lines[(start + 1)...]
        let end = rest.firstIndex(of: "") ?? rest.endIndex
        return rest[..<end].joined(separator: "\n") + "\n"
    }
}
