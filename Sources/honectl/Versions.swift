import ArgumentParser
import Foundation
import Generation
import GGUF
import JSON
import Learning
import Llama
import Registry
import Training

/// `honectl versions list|show|diff ADAPTER` — an adapter's history.
struct Versions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an adapter's versions: history, one version's gate metrics, or the difference between two.",
        subcommands: [List.self, Show.self, Diff.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every version, newest first, with gate outcome and who activated it.")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "Adapter name.") var adapter: String

        func run() async throws {
            try await options.run { registry, _ in
                guard let record = try await registry.adapter(adapter) else { throw Output.Failure("adapter \"\(adapter)\" does not exist") }
                let versions = try await registry.versions(of: adapter)
                let activations = try await registry.activations(of: adapter)
                if options.json {
                    Output.json(.array(versions.map { v in
                        Versions.json(v, active: record.activeVersion == v.version, activation: activations[v.version])
                    }))
                    return
                }
                print(Output.table(["VERSION", "STATUS", "PARENT", "CREATED", "JOBS", "EXAMPLES", "NLL+", "KL", "ACTIVATED", "BY", "REASON"],
                                   versions.map { v in
                    let activation = activations[v.version]
                    return ["\(Output.version(v.version))\(record.activeVersion == v.version ? " *" : "")", v.status,
                            Output.version(v.parentVersion), Output.time(v.createdAt), "\(v.jobIDs.count)", "\(v.examples)",
                            Versions.figure(v.metrics["anchor_nll_rise_bits"]), Versions.figure(v.metrics["kl_bits"]),
                            Output.time(activation?.at), activation?.actor ?? "-", v.reason ?? ""]
                }), terminator: "")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One version: lineage, blob, jobs and every gate metric.")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "Adapter name.") var adapter: String
        @Argument(help: "Version (3 or v3).") var version: String
        @Flag(help: "Print the training curve: each step's loss, gradient norm, learning rate and held-out passes.") var steps = false

        func run() async throws {
            let number = try VersionArgument.parse(version)
            try await options.run { registry, _ in
                guard let record = try await registry.adapter(adapter) else { throw Output.Failure("adapter \"\(adapter)\" does not exist") }
                guard let v = try await registry.version(adapter, number) else { throw Output.Failure("adapter \"\(adapter)\" has no version \(number)") }
                let activation = try await registry.activations(of: adapter)[number]
                if steps {
                    let rows = try await registry.pool.query("""
                        SELECT step, loss, grad_norm, learning_rate, held_out_passed, held_out_checks FROM hone.version_steps
                        WHERE adapter = \(adapter) AND version = \(number) ORDER BY step
                        """)
                    let curve: [(step: Int, loss: Double, norm: Double, lr: Double, passed: Int?, checks: Int?)] = try rows.map {
                        (try $0.decode("step"), try $0.decode("loss"), try $0.decode("grad_norm"), try $0.decode("learning_rate"),
                         try $0.decodeIfPresent("held_out_passed"), try $0.decodeIfPresent("held_out_checks"))
                    }
                    if options.json {
                        Output.json(.array(curve.map { p in
                            .object(["step": .int(p.step), "loss": .double(p.loss), "grad_norm": .double(p.norm), "learning_rate": .double(p.lr),
                                     "held_out_passed": p.passed.map { .int($0) } ?? .null, "held_out_checks": p.checks.map { .int($0) } ?? .null])
                        }))
                        return
                    }
                    guard !curve.isEmpty else { throw Output.Failure("\(v.id) has no recorded steps (trained before curves were kept, or not trained)") }
                    print(Output.table(["STEP", "LOSS", "GRAD NORM", "LR", "HELD-OUT"], curve.map { p in
                        ["\(p.step)", String(format: "%.4f", p.loss), String(format: "%.4f", p.norm), String(format: "%.2g", p.lr),
                         p.passed.map { "\($0)/\(p.checks!)" } ?? "-"]
                    }), terminator: "")
                    return
                }
                if options.json {
                    Output.json(Versions.json(v, active: record.activeVersion == number, activation: activation))
                    return
                }
                var rows: [[String]] = [
                    ["version", v.id + (record.activeVersion == number ? " (active)" : "")],
                    ["status", v.status], ["parent", Output.version(v.parentVersion)],
                    ["created", Output.time(v.createdAt)], ["base model", v.baseModelSHA256],
                    ["blob", v.blobSHA256.map { "\($0) (\(v.blobBytes) bytes)" } ?? "-"],
                    ["jobs", v.jobIDs.map(String.init).joined(separator: ",")], ["examples", "\(v.examples)"],
                    ["activated", activation.map { "\(Output.time($0.at)) by \($0.actor)" } ?? "-"],
                ]
                if let reason = v.reason { rows.append(["reason", reason]) }
                if case .object(let metrics) = v.metrics {
                    for key in metrics.keys.sorted() { rows.append([key, Versions.figure(metrics[key])]) }
                }
                print(Output.table(["FIELD", "VALUE"], rows), terminator: "")
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Metric changes and per-tensor weight change norms between two versions (needs the model for shapes).")
        @OptionGroup var options: OperatorOptions
        @OptionGroup var modelOptions: ModelOptions
        @Argument(help: "Adapter name.") var adapter: String
        @Argument(help: "From version.") var from: String
        @Argument(help: "To version.") var to: String
        @Option(help: "Show this many tensors with the largest change (all with --json).") var top = 10

        func run() async throws {
            let a = try VersionArgument.parse(from), b = try VersionArgument.parse(to)
            let (model, _) = try modelOptions.load()
            try await options.run { registry, _ in
                var metrics: [[String]] = [], metricJSON: [String: JSONValue] = [:]
                var weights: [(String, Double, Double)] = []
                var loaded: [LoRAAdapter] = []
                for n in [a, b] {
                    guard let v = try await registry.version(adapter, n) else { throw Output.Failure("adapter \"\(adapter)\" has no version \(n)") }
                    guard let blob = try await registry.blob(adapter, n) else { throw Output.Failure("\(v.id) was rejected and has no weights") }
                    loaded.append(try AdapterBlob.decode(blob.bytes, sha256: blob.sha256, model: model, source: v.id))
                    if case .object(let m) = v.metrics {
                        for (k, value) in m { metricJSON[k, default: .object([:])] = Versions.merge(metricJSON[k], n == a ? "from" : "to", value) }
                    }
                }
                for key in metricJSON.keys.sorted() {
                    metrics.append([key, Versions.figure(metricJSON[key]?["from"]), Versions.figure(metricJSON[key]?["to"])])
                }
                guard loaded[0].config == loaded[1].config else { throw Output.Failure("the versions have different LoRA shapes; no weight diff") }
                for key in loaded[0].keys {
                    let x = loaded[0].weights[key]!, y = loaded[1].weights[key]!
                    // The change of the effective weight update ΔW = scale·B·A is what serving sees;
                    // A and B separately are reported as their own change norms.
                    func norm(_ p: [Float], _ q: [Float]) -> Double { sqrt(zip(p, q).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }) }
                    weights.append(("layers.\(key.layer).\(key.target.modulePath)", norm(x.a, y.a), norm(x.b, y.b)))
                }
                weights.sort { $0.1 + $0.2 > $1.1 + $1.2 }
                if options.json {
                    Output.json(.object(["adapter": .string(adapter), "from": .int(a), "to": .int(b), "metrics": .object(metricJSON),
                                         "tensors": .array(weights.map { .object(["tensor": .string($0.0), "lora_A_change": .double($0.1), "lora_B_change": .double($0.2)]) })]))
                    return
                }
                print(Output.table(["METRIC", "v\(a)", "v\(b)"], metrics), terminator: "")
                print()
                print(Output.table(["TENSOR", "|ΔA|", "|ΔB|"], weights.prefix(top).map { [$0.0, String(format: "%.4g", $0.1), String(format: "%.4g", $0.2)] }),
                      terminator: "")
            }
        }
    }

    static func merge(_ existing: JSONValue?, _ key: String, _ value: JSONValue) -> JSONValue {
        guard case .object(var o)? = existing else { return .object([key: value]) }
        o[key] = value
        return .object(o)
    }

    static func figure(_ value: JSONValue?) -> String {
        switch value {
        case .double(let d)?: return String(format: "%.4g", d)
        case .int(let i)?: return "\(i)"
        case .string(let s)?: return s
        case .bool(let b)?: return "\(b)"
        case nil, .null?: return "-"
        case let other?: return other.jsonText
        }
    }

    static func json(_ v: VersionRecord, active: Bool, activation: (actor: String, at: Date)?) -> JSONValue {
        .object([
            "adapter": .string(v.adapter), "version": .int(v.version), "id": .string(v.id), "status": .string(v.status),
            "active": .bool(active), "parent_version": Output.optional(v.parentVersion), "base_model_sha256": .string(v.baseModelSHA256),
            "blob_sha256": Output.optional(v.blobSHA256), "blob_bytes": .int(v.blobBytes), "metrics": v.metrics,
            "job_ids": .array(v.jobIDs.map { .int(Int($0)) }), "examples": .int(v.examples), "reason": Output.optional(v.reason),
            "created_at": Output.isoTime(v.createdAt), "activated_at": Output.isoTime(activation?.at),
            "activated_by": Output.optional(activation?.actor),
        ])
    }
}

/// `honectl rollback ADAPTER [--to VERSION]` — serve an earlier version on every replica.
struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an earlier version active (default: the one active before the current one); every replica swaps to it.")
    @OptionGroup var options: OperatorOptions
    @Argument(help: "Adapter name.") var adapter: String
    @Option(help: "Version to roll back to (3 or v3).") var to: String?
    @Option(help: "Why, for the audit row.") var reason: String?

    func run() async throws {
        let explicit = try to.map(VersionArgument.parse)
        try await options.run { registry, _ in
            guard let record = try await registry.adapter(adapter) else { throw Output.Failure("adapter \"\(adapter)\" does not exist") }
            let previous = explicit == nil ? try await registry.previousVersion(of: adapter) : nil
            guard let target = explicit ?? previous else {
                throw Output.Failure("adapter \"\(adapter)\" has no earlier active version to roll back to; name one with --to")
            }
            try await registry.activate(adapter, version: target, action: "rollback", reason: reason)
            if options.json {
                Output.json(.object(["adapter": .string(adapter), "from": Output.optional(record.activeVersion), "to": .int(target)]))
            } else {
                print("rolled back \(adapter) from \(Output.version(record.activeVersion)) to v\(target)")
            }
        }
    }
}

/// `honectl export ADAPTER [--version N] --format peft|gguf-lora --out PATH`.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a version's weights as a PEFT adapter directory or a llama.cpp GGUF LoRA file.")
    enum Format: String, ExpressibleByArgument, CaseIterable { case peft, ggufLora = "gguf-lora" }

    @OptionGroup var options: OperatorOptions
    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "Adapter name.") var adapter: String
    @Option(help: "Version (default: the active one).") var version: String?
    @Option(help: "peft (a directory) or gguf-lora (a file).") var format: Format = .peft
    @Option(help: "Output directory (peft) or file (gguf-lora).") var out: String

    func run() async throws {
        let explicit = try version.map(VersionArgument.parse)
        let (model, _) = try modelOptions.load()
        try await options.run { registry, _ in
            guard let record = try await registry.adapter(adapter) else { throw Output.Failure("adapter \"\(adapter)\" does not exist") }
            guard let number = explicit ?? record.activeVersion else { throw Output.Failure("adapter \"\(adapter)\" has no active version; name one with --version") }
            let id = VersionRecord.id(adapter: adapter, version: number)
            guard let blob = try await registry.blob(adapter, number) else { throw Output.Failure("\(id) does not exist or was rejected (no weights)") }
            let weights = try AdapterBlob.decode(blob.bytes, sha256: blob.sha256, model: model, source: id)
            // A version of subject shards stores its own shard; the others are its ancestors'.
            // PEFT and GGUF LoRA have no routing, so the file holds this shard alone.
            let metrics = try await registry.version(adapter, number)?.metrics ?? .null
            let shard = AdapterScope.shard(metrics: metrics)
            let shards = metrics["shards"]?.intValue ?? 1
            switch format {
            case .peft:
                try PEFTAdapter.write(weights, to: out, model: model,
                                      baseModelName: model.file.metadata["general.name"]?.stringValue ?? "base")
            case .ggufLora:
                try GGUFLoRAExport.write(weights, to: out, model: model)
            }
            if options.json {
                Output.json(.object(["adapter": .string(adapter), "version": .int(number), "format": .string(format.rawValue), "out": .string(out),
                                     "shard": metrics["shard"] ?? .null, "shards": .int(shards)]))
            } else {
                print("wrote \(id) as \(format.rawValue) to \(out)")
                if shards > 1, case .some(let scope) = shard {
                    let subjects = scope.map { $0.subjects.map { $0.joined(separator: " ") }.joined(separator: ", ") } ?? "every other prompt"
                    print("note: \(id) serves \(shards) shards routed by subject; this file holds its own shard (\(subjects)) only")
                }
            }
        }
    }
}
