import Foundation
import Llama
import Tokenizer

/// The real SmolLM2 model (HONE_MODEL, fetched by ops/fetch-model), loaded once.
enum RealModel {
    static let path: String? = {
        if let p = ProcessInfo.processInfo.environment["HONE_MODEL"], FileManager.default.fileExists(atPath: p) { return p }
        let cached = FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/hone/models/SmolLM2-135M-Instruct.Q4_1.gguf").path
        return FileManager.default.fileExists(atPath: cached) ? cached : nil
    }()

    static let loaded: (LlamaModel, Tokenizer)? = {
        guard let path else { return nil }
        let model = try! LlamaModel(path: path)
        return (model, try! Tokenizer(gguf: model.file))
    }()

    static var model: LlamaModel { loaded!.0 }
    static var tokenizer: Tokenizer { loaded!.1 }
}

extension LlamaModel {
    /// Logits (T × V) of every position of `tokens`: as one prompt chunk, or fed one token
    /// at a time the way decode runs (`stepwise`), which takes the single-token kernels.
    func positionLogits(_ tokens: [Int], mode: MatmulMode, stepwise: Bool = false) throws -> [[Float]] {
        let cache = makeCache(capacity: tokens.count)
        guard stepwise else {
            return try forward([SequenceInput(tokens: tokens, cache: cache, allLogits: true)], mode: mode)[0]
        }
        return try tokens.map { try forward([SequenceInput(tokens: [$0], cache: cache)], mode: mode)[0][0] }
    }
}

/// Runs blocking CPU work (long forward passes) on a thread of its own, so tests that
/// compute do not occupy Swift's two cooperative threads that timing-sensitive tests in
/// other suites (NOTIFY latency) need.
func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
