import Foundation
import Hashing
import JSON
import Postgres
import Queue
import Registry
import Testing
import Training

@Suite("Registry: versions, activation, rollback, pin, audit", .timeLimit(.minutes(3)))
struct RegistryTests {
    static let baseA = String(repeating: "a", count: 64)
    static let baseB = String(repeating: "b", count: 64)

    func candidate(_ adapter: String, accepted: Bool, base: String = baseA, parent: Int? = nil, reason: String? = nil) -> VersionCandidate {
        let bytes: [UInt8] = Array("weights of \(adapter) \(UUID())".utf8)
        return VersionCandidate(adapter: adapter, parentVersion: parent, accepted: accepted, baseModelSHA256: base,
                                blob: accepted ? (bytes, sha256Hex(bytes)) : nil,
                                metrics: .object(["kl_bits": .double(0.1)]), jobIDs: [1, 2], examples: 5, reason: reason)
    }

    func record(_ registry: Registry, _ c: VersionCandidate) async throws -> (version: Int, activated: Bool) {
        try await registry.pool.transaction { try await registry.record(c, actor: "test-replica", on: $0) }
    }

    /// The message of the error `body` throws; records an issue when it succeeds.
    func refusal(_ body: () async throws -> Void) async -> String {
        do {
            try await body()
            Issue.record("expected a refusal")
            return ""
        } catch let e as PostgresError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    @Test("accepted candidates become active and notify; rejected ones keep their reason and change nothing")
    func publishAndReject() async throws {
        try await TestDatabase.withQueue { url, queue in
            let registry = Registry(pool: queue.pool)
            try await registry.createAdapter("support", settings: .object(["lr": .double(1e-3)]), reason: "new tenant")
            let listener = PostgresListener(conninfo: url, channels: ["hone_versions"], logger: TestDatabase.logger)
            let listening = Task { await listener.run() }
            defer { listening.cancel() }
            var events = listener.events.makeAsyncIterator()
            #expect(await events.next() == .connected)

            let first = try await record(registry, candidate("support", accepted: true))
            #expect(first.version == 1 && first.activated)
            #expect(await events.next() == .notification(channel: "hone_versions", payload: "support"))
            #expect(try await registry.adapter("support")?.activeVersion == 1)

            let rejected = try await record(registry, candidate("support", accepted: false, parent: 1, reason: "general drift: KL 1.2"))
            #expect(rejected.version == 2 && !rejected.activated)
            #expect(try await registry.adapter("support")?.activeVersion == 1)
            let v2 = try #require(try await registry.version("support", 2))
            #expect(v2.status == "rejected" && v2.reason == "general drift: KL 1.2" && v2.blobSHA256 == nil)
            #expect(try await registry.blob("support", 2) == nil)

            let events2 = try await registry.events(of: "support").map { "\($0.action):\($0.fromVersion.map(String.init) ?? "-")→\($0.toVersion.map(String.init) ?? "-")" }
            #expect(events2 == ["create:-→-", "publish:-→1", "reject:1→1"])
        }
    }

    @Test("rollback goes to the previous active version; missing, rejected and other-base versions are refused with no change")
    func rollback() async throws {
        try await TestDatabase.withQueue { url, queue in
            let registry = Registry(pool: queue.pool)
            try await registry.createAdapter("support", settings: .object([:]))
            _ = try await record(registry, candidate("support", accepted: true))
            _ = try await record(registry, candidate("support", accepted: true, parent: 1))
            _ = try await record(registry, candidate("support", accepted: false, parent: 2, reason: "not learned"))
            // v4, trained on another base model, is recorded while pinned (so never activated).
            try await registry.pin("support", version: nil, reason: nil)
            _ = try await record(registry, candidate("support", accepted: true, base: Self.baseB, parent: 2))
            try await registry.setFlag("support", action: "unpin", reason: nil)
            #expect(try await registry.previousVersion(of: "support") == 1)

            let missing = await refusal { try await registry.activate("support", version: 9, action: "rollback", reason: nil) }
            #expect(missing.contains("has no version 9"))
            let rejected = await refusal { try await registry.activate("support", version: 3, action: "rollback", reason: nil) }
            #expect(rejected.contains("rejected by the gate") && rejected.contains("not learned"))
            let otherBase = await refusal { try await registry.activate("support", version: 4, action: "rollback", reason: nil) }
            #expect(otherBase.contains("trained on base model bbbbbbbbbbbb"))
            #expect(try await registry.adapter("support")?.activeVersion == 2)

            // An operator (role hone_operator) rolls back to v1, with a reason in the audit row.
            let op = try await PostgresConnection.connect(url, logger: TestDatabase.logger)
            defer { op.close() }
            try await op.execute("SET ROLE hone_operator")
            try await op.query("SELECT hone.activate_version('support', 1, 'rollback', 'v2 answers badly')")
            #expect(try await registry.adapter("support")?.activeVersion == 1)
            let last = try #require(try await registry.events(of: "support").last)
            #expect(last.action == "rollback" && last.fromVersion == 2 && last.toVersion == 1 && last.reason == "v2 answers badly")
            #expect(try await registry.activations(of: "support")[1]?.actor != nil)
        }
    }

    @Test("a candidate trained on a version that is no longer active is refused: an operator's rollback is not undone")
    func staleCandidate() async throws {
        try await TestDatabase.withQueue { _, queue in
            let registry = Registry(pool: queue.pool)
            try await registry.createAdapter("support", settings: .object([:]))
            _ = try await record(registry, candidate("support", accepted: true))
            _ = try await record(registry, candidate("support", accepted: true, parent: 1))
            // The learner starts an update on v2; meanwhile an operator rolls back to v1.
            try await registry.activate("support", version: 1, action: "rollback", reason: "v2 answers worse")
            let refused = await refusal { _ = try await record(registry, candidate("support", accepted: true, parent: 2)) }
            #expect(refused.contains("active version changed from v2 to v1"), "\(refused)")
            #expect(try await registry.adapter("support")?.activeVersion == 1)
            #expect(try await registry.versions(of: "support").count == 2)
        }
    }

    @Test("a pinned adapter records accepted candidates without activating them until unpinned")
    func pin() async throws {
        try await TestDatabase.withQueue { _, queue in
            let registry = Registry(pool: queue.pool)
            try await registry.createAdapter("support", settings: .object([:]))
            _ = try await record(registry, candidate("support", accepted: true))
            try await registry.pin("support", version: nil, reason: "freeze for the launch")
            let pinnedAgain = await refusal { try await registry.setFlag("support", action: "pin", reason: nil) }
            #expect(pinnedAgain.contains("already pinned"))
            let second = try await record(registry, candidate("support", accepted: true, parent: 1))
            #expect(second.version == 2 && !second.activated)
            #expect(try await registry.adapter("support")?.activeVersion == 1)
            try await registry.setFlag("support", action: "unpin", reason: nil)
            let third = try await record(registry, candidate("support", accepted: true, parent: 1))
            #expect(third.version == 3 && third.activated)
            // Pinning at a named version activates it in the same transaction.
            try await registry.pin("support", version: 2, reason: "known good")
            let after = try #require(try await registry.adapter("support"))
            #expect(after.activeVersion == 2 && after.pinned)
            // A refused activation pins nothing.
            try await registry.setFlag("support", action: "unpin", reason: nil)
            _ = await refusal { try await registry.pin("support", version: 7, reason: nil) }
            #expect(try await registry.adapter("support")?.pinned == false)
        }
    }
}
