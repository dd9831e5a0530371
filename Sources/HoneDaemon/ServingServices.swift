import Foundation
import Generation
import Llama
import Logging
import Server
import ServiceLifecycle
import Tokenizer

/// Loads the model file and installs it as the first snapshot; until then `/readyz` says 503.
struct ModelLoaderService: Service {
    let path: String
    let holder: SnapshotHolder
    let logger: Logger

    func run() async throws {
        let start = ContinuousClock.now
        let model = try LlamaModel(path: path)
        let tokenizer = try Tokenizer(gguf: model.file)
        let id = model.file.metadata["general.basename"]?.stringValue
            ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        holder.install(ModelSnapshot(model: model, tokenizer: tokenizer, modelID: id, version: "base"))
        logger.info("model loaded", metadata: ["model.id": "\(id)", "model.path": "\(path)",
                                              "model.load_ms": "\((ContinuousClock.now - start).components.seconds * 1000 + (ContinuousClock.now - start).components.attoseconds / 1_000_000_000_000_000)"])
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
