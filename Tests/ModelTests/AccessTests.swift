import Foundation
import JSON
import BuiltTools
import Testing

/// API keys as operators and tenants meet them: two real `honed` replicas on one database,
/// keys made and revoked with `honectl`.
@Suite("Access: API keys", .enabled(if: RealModel.path != nil && BuiltTool("honed") != nil && BuiltTool("honectl") != nil),
       .serialized, .timeLimit(.minutes(5)))
struct AccessTests {
    typealias Replica = ReplicaTests.Replica

    /// Polls until `done` holds on every replica; returns the seconds it took.
    static func seconds(until done: (Replica) async throws -> Bool, on replicas: [Replica]) async throws -> Double {
        let start = ContinuousClock.now
        for replica in replicas {
            while try await !done(replica) {
                guard ContinuousClock.now - start < .seconds(30) else { return .infinity }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        return (ContinuousClock.now - start) / .seconds(1)
    }

    @Test("""
        once a key exists every /v1 request needs one (401 as OpenAI's error object); a tenant's key sees its adapters and the base \
        model, gets 404 for another's, 403 for /status; an operator's reads /status and /metrics; create and revoke reach both \
        replicas within 2 s; keys appear in no log; a non-loopback address without keys is refused
        """)
    func apiKeys() async throws {
        let dir = try ReplicaTests.directory("access")
        let base = 20000 + Int((getpid() + 3000) % 10000)
        let a = try Replica.start(port: base, dataDir: dir + "/a", databaseURL: nil)
        defer { a.stop() }
        try await a.ready()
        let url = "postgresql://postgres@/hone?host=\(dir)/a/pg"
        let b = try Replica.start(port: base + 1, dataDir: dir + "/b", databaseURL: url)
        defer { b.stop() }
        try await b.ready()
        let ctl = BuiltTool("honectl")!
        func honectl(_ args: String...) throws -> (status: Int32, out: String, err: String) {
            try ctl.run(args, environment: ["HONE_DATABASE_URL": url])
        }
        for name in ["alpha", "beta"] { #expect(try honectl("adapters", "create", name, "--rank", "4").status == 0) }
        for replica in [a, b] {
            _ = try await Self.seconds(until: { try await $0.fingerprint("smollm2:beta") != nil }, on: [replica])
        }
        func chat(_ replica: Replica, _ model: String, key: String?) async throws -> (Int, JSONValue) {
            let (status, body, _) = try await replica.server.post("/v1/chat/completions", ServerTests.chatBody("Hi", maxTokens: 2, model: model),
                                                                  headers: key.map { ["Authorization": "Bearer \($0)"] } ?? [:])
            return (status, try JSONValue(parsing: body))
        }
        // No key exists: open (on loopback).
        #expect(try await chat(a, "smollm2:beta", key: nil).0 == 200)

        let made = try honectl("keys", "create", "--adapter", "alpha", "--note", "tenant alpha")
        #expect(made.status == 0, "\(made.err)")
        let keyAlpha = try #require(made.out.split(separator: "\n").last.map(String.init))
        let keyOperator = try #require(try honectl("keys", "create", "--operator").out.split(separator: "\n").last.map(String.init))
        #expect(keyAlpha.hasPrefix("hone-") && keyAlpha.count == 69)
        let closedAfter = try await Self.seconds(until: { try await chat($0, "smollm2", key: nil).0 == 401 }, on: [a, b])
        print("access: keys required on both replicas \(String(format: "%.2f", closedAfter)) s after create")
        #expect(closedAfter <= 2)

        for replica in [a, b] {
            let (missing, missingBody) = try await chat(replica, "smollm2", key: nil)
            #expect(missing == 401 && missingBody["error"]?["type"]?.stringValue == "invalid_request_error")
            let (wrong, wrongBody) = try await chat(replica, "smollm2", key: "hone-" + String(repeating: "0", count: 64))
            #expect(wrong == 401 && wrongBody["error"]?["code"]?.stringValue == "invalid_api_key")
            let message = wrongBody["error"]?["message"]?.stringValue ?? ""
            #expect(message.contains("0000") == false, "the error repeats the key: \(message)")
            #expect(try await chat(replica, "smollm2:alpha", key: keyAlpha).0 == 200)
            #expect(try await chat(replica, "smollm2", key: keyAlpha).0 == 200)
            // Another tenant's adapter is answered exactly as a model that does not exist.
            let (other, otherBody) = try await chat(replica, "smollm2:beta", key: keyAlpha)
            let (_, ghostBody) = try await chat(replica, "smollm2:ghost", key: keyAlpha)
            #expect(other == 404 && otherBody["error"]?["code"]?.stringValue == "model_not_found")
            #expect(otherBody["error"]?["message"]?.stringValue?.replacingOccurrences(of: "beta", with: "ghost")
                    == ghostBody["error"]?["message"]?.stringValue)
            let (_, models, _) = try await replica.server.get("/v1/models", headers: ["Authorization": "Bearer \(keyAlpha)"])
            #expect(try JSONValue(parsing: models)["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["smollm2", "smollm2:alpha"])
            #expect(try await chat(replica, "smollm2:beta", key: keyOperator).0 == 200)
            for page in ["/status", "/metrics"] {
                #expect(try await replica.server.get(page, headers: ["Authorization": "Bearer \(keyAlpha)"]).0 == 403)
                #expect(try await replica.server.get(page, headers: ["Authorization": "Bearer \(keyOperator)"]).0 == 200)
            }
            // Without a key: 401 and the scheme to answer with (curl: Foundation's URLSession
            // waits forever on a Basic challenge it has no credential for). A browser on the
            // status page gets a Basic login prompt and answers with the operator's key as the password.
            let curl = try #require(BuiltTool(system: ["/usr/bin/curl"]))
            for (page, scheme) in [("/status", "Basic"), ("/metrics", "Bearer")] {
                let r = try curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code} %header{www-authenticate}",
                                      "http://127.0.0.1:\(replica.server.port)\(page)"])
                #expect(r.out.hasPrefix("401 \(scheme)"), "\(page): \(r.out)")
            }
            let basic = "Basic " + Data("operator:\(keyOperator)".utf8).base64EncodedString()
            #expect(try await replica.server.get("/status", headers: ["Authorization": basic]).0 == 200)
            #expect(try await replica.server.get("/healthz").0 == 200)
        }

        // Revoked: refused on both replicas within 2 s; the list shows prefixes, never keys.
        let listed = try JSONValue(parsing: try honectl("keys", "list", "--json").out).arrayValue ?? []
        let alphaID = try #require(listed.first { $0["note"]?.stringValue == "tenant alpha" }?["id"]?.intValue)
        #expect(try honectl("keys", "revoke", "\(alphaID)").out == "revoked key \(alphaID)\n")
        let revokedAfter = try await Self.seconds(until: { try await chat($0, "smollm2:alpha", key: keyAlpha).0 == 401 }, on: [a, b])
        print("access: key refused on both replicas \(String(format: "%.2f", revokedAfter)) s after revoke")
        #expect(revokedAfter <= 2)
        #expect(try await chat(a, "smollm2:alpha", key: keyOperator).0 == 200)
        let table = try honectl("keys", "list").out
        for key in [keyAlpha, keyOperator] {
            #expect(!table.contains(key) && !listed.description.contains(key))
            for log in [a.log, a.log + ".err", b.log, b.log + ".err"] {
                #expect(!((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(key), "\(log) contains a key")
            }
        }

        // A replica on a non-loopback address with no key at all refuses to start.
        let open = try BuiltTool("honed")!.run(["--model", RealModel.path!, "--port", "\(base + 2)", "--host", "0.0.0.0",
                                                "--data-dir", dir + "/open", "--no-learner", "--log-level", "error"])
        #expect(open.status != 0 && (open.out + open.err).contains("refusing to serve an open API on 0.0.0.0"), "\(open.err.suffix(500))")
    }
}
