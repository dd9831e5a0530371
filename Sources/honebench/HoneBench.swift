import EmbeddedPostgres
import Foundation
import HoneDaemon
import Logging
import Postgres
import Queue
import Tensor

/// `honebench NAME…` — Hone's benchmarks; one JSON object per line on stdout.
/// Run through `ops/bench` (release build). `HONE_BENCH_DATABASE_URL` points the database
/// benchmarks at an existing server; otherwise a private durable cluster is made.
@main
struct HoneBench {
    static func main() async throws {
        CPUEnvironment.prepareProcess()
        var logger = Logger(label: "honebench")
        logger.logLevel = .warning
        let names = CommandLine.arguments.dropFirst()
        let known = ["queue", "decode", "prefill", "train", "serve", "swap", "learn", "freshness", "lifelong", "profile", "soak", "chaos"]
        let selected = names.isEmpty ? known : Array(names)
        for name in selected {
            switch name {
            case "queue": try await QueueBench.run(logger: logger)
            case "decode", "prefill": try EngineBench.run(name)
            case "train": try TrainBench.run()
            case "serve", "swap": try await ServeBench.run(name, logger: logger)
            case "learn": try await LearnBench.run()
            case "freshness": try await FreshnessBench.run(logger: logger)
            case "lifelong": try await LifelongBench.run(logger: logger)
            case "profile": try ProfileBench.run()
            case "soak": try await SoakBench.run(logger: logger)
            case "chaos": try await Chaos.run(logger: logger)
            default:
                FileHandle.standardError.write(Data("honebench: unknown benchmark \(name) (known: \(known.joined(separator: ", ")))\n".utf8))
                exit(2)
            }
        }
    }
}

/// Prints one JSON line from ordered key-value pairs, followed by what the figures were
/// measured on (CPU model, kernel level, OpenBLAS core type), so lines from different
/// machines are never compared blindly.
func emit(_ fields: KeyValuePairs<String, Any>) {
    let compute = CPUEnvironment.current
    let machine: [(String, Any)] = [("cpu", compute.model), ("kernels", compute.kernelLevel.description), ("blas_core_type", compute.blasCoreType)]
    let body = (fields.map { ($0.key, $0.value) } + machine).map { key, value -> String in
        let rendered: String
        switch value {
        case let s as String: rendered = "\"\(s)\""
        case let b as Bool: rendered = b ? "true" : "false"
        case let d as Double where !d.isFinite: rendered = "null"  // JSON has no NaN: a figure not measured
        case let d as Double: rendered = d.rounded() == d || abs(d) >= 10 ? String(format: "%.1f", d) : String(format: "%.2f", d)
        default: rendered = "\(value)"
        }
        return "\"\(key)\":\(rendered)"
    }
    FileHandle.standardOutput.write(Data(("{" + body.joined(separator: ",") + "}\n").utf8))
}

/// The value at fraction p of the sorted values (nearest rank; p 0.5 is the median, the
/// upper middle for even counts).
func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}
