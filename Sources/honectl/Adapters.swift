import ArgumentParser
import Foundation
import JSON
import Learning
import Registry

/// `honectl adapters …` — create and list adapters.
struct Adapters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and list adapters (one LoRA per skill or tenant).",
        subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an adapter; until its first version is published the base model answers for it.")

        @OptionGroup var options: OperatorOptions

        @Argument(help: "Adapter name: 1-63 lowercase letters, digits, - or _ (clients ask for MODEL:NAME).")
        var name: String

        @Option(help: "LoRA rank (default 16).")
        var rank: Int?

        @Option(help: "LoRA alpha (default 32).")
        var alpha: Double?

        @Option(help: "Comma-separated LoRA targets among q,k,v,o,gate,up,down (default all).")
        var targets: String?

        @Option(help: "AdamW learning rate of updates (default 1e-3).")
        var lr: Double?

        @Option(help: #"Further learning settings as a JSON object, e.g. '{"max_steps": 30}'."#)
        var settings: String?

        @Option(help: "Why, for the audit row.")
        var reason: String?

        /// The settings object, checked by the learner's own parser so errors show now.
        func settingsJSON() throws -> JSONValue {
            var object: [String: JSONValue] = [:]
            if let settings {
                guard case .object(let o) = try JSONValue(parsing: settings) else { throw ValidationError("--settings must be a JSON object") }
                object = o
            }
            if let rank { object["rank"] = .int(rank) }
            if let alpha { object["alpha"] = .double(alpha) }
            if let targets { object["targets"] = .array(targets.split(separator: ",").map { .string(String($0)) }) }
            if let lr { object["lr"] = .double(lr) }
            do { _ = try LearningSettings(json: .object(object)) } catch { throw ValidationError("\(error)") }
            return .object(object)
        }

        func validate() throws { _ = try settingsJSON() }

        func run() async throws {
            let settings = try settingsJSON()
            try await options.run { registry, _ in
                try await registry.createAdapter(name, settings: settings, reason: reason)
                if options.json {
                    Output.json(.object(["adapter": .string(name), "settings": settings]))
                } else {
                    print("created adapter \(name)\(settings == .object([:]) ? "" : " with settings \(settings.jsonText)")")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List adapters with their active version and flags.")

        @OptionGroup var options: OperatorOptions

        func run() async throws {
            try await options.run { registry, _ in
                let adapters = try await registry.adapters()
                if options.json {
                    Output.json(.array(adapters.map(Self.json)))
                } else {
                    print(Output.table(["ADAPTER", "ACTIVE", "PINNED", "PAUSED", "SETTINGS"], adapters.map {
                        [$0.name, Output.version($0.activeVersion), $0.pinned ? "yes" : "no", $0.paused ? "yes" : "no", $0.settings.jsonText]
                    }), terminator: "")
                }
            }
        }

        static func json(_ a: AdapterRecord) -> JSONValue {
            .object(["adapter": .string(a.name), "active_version": Output.optional(a.activeVersion), "pinned": .bool(a.pinned),
                     "paused": .bool(a.paused), "settings": a.settings, "created_at": Output.isoTime(a.createdAt)])
        }
    }
}

/// `honectl pin ADAPTER [VERSION]` — keep serving one version; the learner still records candidates.
struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin an adapter to a version (default: its active one): candidates are still trained and recorded but never activated until unpin.")

    @OptionGroup var options: OperatorOptions
    @Argument(help: "Adapter name.") var adapter: String
    @Argument(help: "Version to serve (e.g. 3 or v3); default the active version.") var version: String?
    @Option(help: "Why, for the audit row.") var reason: String?

    func run() async throws {
        let number = try version.map(VersionArgument.parse)
        try await options.run { registry, _ in
            try await registry.pin(adapter, version: number, reason: reason)
            let record = try await registry.adapter(adapter)
            if options.json {
                Output.json(.object(["adapter": .string(adapter), "pinned": .bool(true), "active_version": Output.optional(record?.activeVersion)]))
            } else {
                print("pinned \(adapter) at \(Output.version(record?.activeVersion))")
            }
        }
    }
}

/// `honectl unpin|pause|resume ADAPTER` — one flag change with its audit row.
struct FlagCommand {
    static func run(_ action: String, adapter: String, reason: String?, options: OperatorOptions) async throws {
        try await options.run { registry, _ in
            try await registry.setFlag(adapter, action: action, reason: reason)
            let done = ["unpin": "unpinned", "pause": "paused", "resume": "resumed"][action] ?? action
            if options.json {
                Output.json(.object(["adapter": .string(adapter), "action": .string(action)]))
            } else {
                print("\(done) \(adapter)")
            }
        }
    }
}

struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unpin an adapter: the next accepted candidate becomes active.")
    @OptionGroup var options: OperatorOptions
    @Argument(help: "Adapter name.") var adapter: String
    @Option(help: "Why, for the audit row.") var reason: String?
    func run() async throws { try await FlagCommand.run("unpin", adapter: adapter, reason: reason, options: options) }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause an adapter's learning: its jobs wait; serving goes on.")
    @OptionGroup var options: OperatorOptions
    @Argument(help: "Adapter name.") var adapter: String
    @Option(help: "Why, for the audit row.") var reason: String?
    func run() async throws { try await FlagCommand.run("pause", adapter: adapter, reason: reason, options: options) }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a paused adapter's learning.")
    @OptionGroup var options: OperatorOptions
    @Argument(help: "Adapter name.") var adapter: String
    @Option(help: "Why, for the audit row.") var reason: String?
    func run() async throws { try await FlagCommand.run("resume", adapter: adapter, reason: reason, options: options) }
}

/// Versions are written `3` or `v3`.
enum VersionArgument {
    static func parse(_ text: String) throws -> Int {
        let digits = text.hasPrefix("v") ? String(text.dropFirst()) : text
        guard let n = Int(digits), n > 0 else { throw ValidationError("version \(text) is not a positive number like 3 or v3") }
        return n
    }
}
