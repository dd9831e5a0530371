import ArgumentParser
import Foundation
import JSON
import Postgres
import Server

/// `honectl keys create|list|revoke` — API keys for `/v1` (and an operator's for `/status`
/// and `/metrics`). Only a key's SHA-256 is stored; `create` prints the key once.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "API keys: create one scoped to adapters, list them, revoke one. Every replica sees a change within 2 s.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key; the key is the last line of the output, shown this once.",
            discussion: "Once any key exists, every /v1 request needs one (Authorization: Bearer KEY).")
        @OptionGroup var options: OperatorOptions
        @Option(name: .customLong("adapter"), help: "An adapter the key may use (repeatable); the base model is open to every key.")
        var adapters: [String] = []
        @Flag(help: "An operator's key: every adapter, /status and /metrics.") var `operator` = false
        @Option(help: "What the key is for (shown in list).") var note: String?

        func validate() throws {
            guard `operator` || !adapters.isEmpty else { throw ValidationError("name at least one --adapter, or pass --operator") }
        }

        func run() async throws {
            try await options.run { registry, _ in
                for name in adapters where try await registry.adapter(name) == nil {
                    throw Output.Failure("adapter \"\(name)\" does not exist")
                }
                let key = APIKeys.generate()
                let digest = APIKeys.digest(key)
                let rows = try await registry.pool.query("""
                    INSERT INTO hone.api_keys (prefix, key_sha256, adapters, operator, note)
                    VALUES (\(String(key.prefix(12))), \(digest), \(adapters)::text[], \(`operator`), \(note)) RETURNING id
                    """)
                let id: Int = try rows[0].decode("id")
                if options.json {
                    Output.json(.object(["id": .int(id), "key": .string(key)]))
                } else {
                    print("created key \(id) for \(`operator` ? "operators (every adapter)" : adapters.joined(separator: ", ")); it is shown only now:")
                    print(key)
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every key: its prefix, scope and state (never the key).")
        @OptionGroup var options: OperatorOptions

        func run() async throws {
            try await options.run { registry, _ in
                let rows = try await registry.pool.query("""
                    SELECT id, prefix, adapters, operator, coalesce(note, '') AS note, created_by, created_at, revoked_at
                    FROM hone.api_keys ORDER BY id
                    """)
                struct Row { let id: Int; let prefix: String; let adapters: [String]; let op: Bool; let note, by: String; let created: Date; let revoked: Date? }
                let keys = try rows.map {
                    Row(id: try $0.decode("id"), prefix: try $0.decode("prefix"), adapters: try $0.decode("adapters"), op: try $0.decode("operator"),
                        note: try $0.decode("note"), by: try $0.decode("created_by"), created: try $0.decode("created_at"),
                        revoked: try $0.decodeIfPresent("revoked_at"))
                }
                if options.json {
                    Output.json(.array(keys.map { k in
                        .object(["id": .int(k.id), "prefix": .string(k.prefix), "adapters": .array(k.adapters.map { .string($0) }),
                                 "operator": .bool(k.op), "note": .string(k.note), "created_by": .string(k.by),
                                 "created_at": .string(Output.time(k.created)), "revoked_at": k.revoked.map { .string(Output.time($0)) } ?? .null])
                    }))
                    return
                }
                print(Output.table(["ID", "PREFIX", "SCOPE", "NOTE", "CREATED", "BY", "REVOKED"], keys.map { k in
                    ["\(k.id)", k.prefix + "…", k.op ? "operator" : k.adapters.joined(separator: ","), k.note, Output.time(k.created), k.by,
                     Output.time(k.revoked)]
                }), terminator: "")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its id; requests with it get 401 within 2 s.")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "The key's id (from keys list).") var id: Int

        func run() async throws {
            try await options.run { registry, _ in
                let rows = try await registry.pool.query("""
                    UPDATE hone.api_keys SET revoked_at = now() WHERE id = \(id) AND revoked_at IS NULL RETURNING id
                    """)
                guard !rows.isEmpty else { throw Output.Failure("no key \(id) that is not revoked already") }
                if options.json { Output.json(.object(["revoked": .int(id)])) } else { print("revoked key \(id)") }
            }
        }
    }
}
