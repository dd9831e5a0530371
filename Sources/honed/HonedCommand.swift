import ArgumentParser
import Foundation
import HoneDaemon
import Llama
import Server
import Tensor
import Logging

/// `honed` — the Hone daemon; `honed serve` (the default) runs it.
@main
struct HonedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "honed",
        abstract: "Hone's daemon: serves the OpenAI-compatible API and runs the queue's services.",
        version: "honed: \(CPUEnvironment.current.summary)",
        subcommands: [Serve.self],
        defaultSubcommand: Serve.self)

    static func main() async {
        CPUEnvironment.prepareProcess()
        await main(nil)
    }
}

/// `honed serve` — serve the model and run the daemon's services until SIGTERM.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the OpenAI-compatible API and run the queue's services until SIGTERM.",
        discussion: """
            Without a database URL it runs the embedded default: a private PostgreSQL cluster \
            under the data directory (HONE_DATA_DIR, default <checkout>/.hone).
            """)

    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (or HONE_DATABASE_URL); unset: the embedded default.")
    var databaseURL: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (or HONE_DATA_DIR).")
    var dataDirectory: String?

    @Option(help: "GGUF model to serve (or HONE_MODEL; default: the SmolLM2 file ops/fetch-model caches).")
    var model: String?

    @Option(help: "Threads for the model's matrix work (or HONE_THREADS; default: every core).")
    var threads: Int?

    @Option(help: "Address to listen on (or HONE_HOST).")
    var host: String?

    @Option(help: "Port to listen on (or HONE_PORT).")
    var port: Int?

    @Flag(name: .customLong("allow-open-api"),
          help: "Serve on a non-loopback --host although no API key exists (anyone who reaches the port may use every adapter).")
    var allowOpenAPI = false

    @Option(name: .customLong("max-batch"), help: "Sequences decoded together at most.")
    var maxBatch: Int = 16

    @Option(name: .customLong("max-concurrent-requests"), help: "Requests in flight at once; more get 429.")
    var maxConcurrentRequests: Int = 64

    @Option(name: .customLong("max-prompt-tokens"), help: "Most prompt tokens per request; more get 400.")
    var maxPromptTokens: Int = 8192

    @Option(name: .customLong("max-completion-tokens"), help: "Largest max_tokens a request may ask for; more gets 400.")
    var maxCompletionTokens: Int = 4096

    @Option(name: .customLong("max-body-bytes"), help: "Largest request body; larger gets 413.")
    var maxBodyBytes: Int = 1 << 20

    @Option(name: .customLong("adapter"), help: "Serve a PEFT LoRA adapter directory as MODEL:NAME (NAME=DIR, repeatable).")
    var adapters: [String] = []

    @Flag(name: .customLong("no-learner"), help: "Serve only: do not run the learner on this replica (another one learns).")
    var noLearner = false

    @Option(name: .customLong("learner-lease"), help: "Seconds an update holds its jobs between heartbeats (default: each job kind's lease_seconds); a crashed replica's jobs run again after it.")
    var learnerLease: Double?

    @Option(name: .customLong("learning-share"), help: "Share of a core that learning gets when serving also wants it (0.015–0.5; learning always gets idle cores).")
    var learningShare: Double = 0.1

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        if let threads { guard threads > 0 else { throw ValidationError("--threads must be positive") } }
        if let learnerLease { guard learnerLease >= 3 else { throw ValidationError("--learner-lease must be at least 3 seconds") } }
        guard (0.015...0.5).contains(learningShare) else { throw ValidationError("--learning-share must be between 0.015 and 0.5") }
        for spec in adapters {
            let parts = spec.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                throw ValidationError("--adapter takes NAME=DIR with a name of letters, digits, - and _ (got \(spec))")
            }
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "honed")
        let compute = CPUEnvironment.current
        logger.info("compute", metadata: ["compute.kernels": "\(compute.kernelLevel)", "compute.cpu_kernels": "\(compute.cpuLevel)",
                                          "compute.blas_core_type": "\(compute.blasCoreType)", "compute.cpu": "\(compute.model)"])
        var paths = HonePaths.fromEnvironment()
        if let dataDirectory { paths.dataDirectory = URL(fileURLWithPath: dataDirectory) }
        let env = ProcessInfo.processInfo.environment
        let url = databaseURL ?? env["HONE_DATABASE_URL"]
        // Read once, when the first matrix product runs: set before the model loads.
        if let threads { setenv("HONE_THREADS", String(threads), 1) }
        let cached = (env["HONE_CACHE"] ?? (env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/hone") + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        guard let modelPath = model ?? env["HONE_MODEL"] ?? (FileManager.default.fileExists(atPath: cached) ? cached : nil) else {
            throw ValidationError("no model: pass --model PATH, set HONE_MODEL, or run ops/fetch-model (it caches the default at \(cached))")
        }
        var server = ServerConfiguration()
        server.host = host ?? env["HONE_HOST"] ?? server.host
        server.port = port ?? env["HONE_PORT"].flatMap(Int.init) ?? server.port
        server.maxConcurrentRequests = maxConcurrentRequests
        server.maxPromptTokens = maxPromptTokens
        server.maxCompletionTokens = maxCompletionTokens
        server.maxBodyBytes = maxBodyBytes
        try server.validate()
        var configuration = DaemonConfiguration(databaseURL: url, paths: paths, modelPath: modelPath, server: server, maxBatch: maxBatch)
        configuration.learner = !noLearner
        configuration.learnerLease = learnerLease.map { .milliseconds(Int64($0 * 1000)) }
        configuration.learningShare = learningShare
        configuration.learnerCrashMarker = ProcessInfo.processInfo.environment["HONE_FAILPOINT_CRASH"]
        configuration.allowOpenAPI = allowOpenAPI
        for spec in adapters {
            let parts = spec.split(separator: "=", maxSplits: 1)
            configuration.adapterDirectories[String(parts[0])] = String(parts[1])
        }
        try await Daemon.run(configuration, logger: logger)
    }
}
