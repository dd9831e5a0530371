import Foundation
import Generation
import Llama
import Logging
import Server
import ServiceLifecycle
import Tokenizer
import Training

/// Loads the model file and installs it as the first snapshot (until then `/readyz` says
/// 503), then the adapters given on the command line, each validated before it is served.
struct ModelLoaderService: Service {
    let path: String
    /// PEFT directories by adapter name.
    let adapters: [String: String]
    let holder: SnapshotHolder
    let logger: Logger

    func run() async throws {
        let start = ContinuousClock.now
        let model = try LlamaModel(path: path)
        let tokenizer = try Tokenizer(gguf: model.file)
        let id = model.file.metadata["general.basename"]?.stringValue
            ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        holder.install(ModelSnapshot(model: model, tokenizer: tokenizer, modelID: id, version: "base"))
        for (name, directory) in adapters.sorted(by: { $0.key < $1.key }) {
            let weights = try PEFTAdapter.read(from: directory, model: model)
            try holder.install(ServedAdapter(name: name, version: "\(name)@local", weights: weights,
                                             baseModelSHA256: model.file.sha256))
            logger.info("adapter loaded", metadata: ["adapter.name": "\(name)", "adapter.path": "\(directory)"])
        }
        logger.info("model loaded", metadata: ["model.id": "\(id)", "model.path": "\(path)",
                                              "model.load_ms": "\(Int((ContinuousClock.now - start) / .milliseconds(1)))"])
        try await gracefulShutdown()
    }
}

/// The batching scheduler as a service: it stops when shutdown begins, after the HTTP
/// server (started later, stopped earlier) has finished its requests.
struct SchedulerService: Service {
    let scheduler: BatchScheduler

    func run() async throws {
        await cancelWhenGracefulShutdown { await scheduler.run() }
    }
}
