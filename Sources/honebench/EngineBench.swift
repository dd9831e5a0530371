import Foundation
import Llama
import Tensor
import Tokenizer

/// Hone's decode and prefill speed on the real model (`HONE_MODEL`): one round of
/// `HONE_BENCH_REPEATS` (default 3) passes, their median. ops/bench alternates rounds with
/// llama.cpp's (ops/bench-llamacpp.py) and reports the medians of both and their ratio.
enum EngineBench {
    static let promptTokens = 512
    static let decodeTokens = 128
    static var repeats: Int { ProcessInfo.processInfo.environment["HONE_BENCH_REPEATS"].flatMap(Int.init) ?? 3 }

    /// The real model (`HONE_MODEL`), its tokenizer and the first `tokens` ids of the
    /// benchmarks' prompt text.
    static func load(promptTokens tokens: Int) throws -> (LlamaModel, Tokenizer, [Int]) {
        guard let path = ProcessInfo.processInfo.environment["HONE_MODEL"] else {
            throw BenchError(message: "HONE_MODEL is not set (ops/bench sets it)")
        }
        let model = try LlamaModel(path: path)
        let tokenizer = try Tokenizer(gguf: model.file)
        let text = Array(repeating: "The history of science is the study of the development of science and scientific knowledge.", count: 64)
            .joined(separator: " ")
        return (model, tokenizer, Array(tokenizer.encode(text).prefix(tokens)))
    }

    static func run(_ which: String) throws {
        let (model, _, ids) = try load(promptTokens: promptTokens)
        var prefill: [Double] = [], decode: [Double] = []
        for _ in 0..<repeats {
            if which == "prefill" {
                let start = ContinuousClock.now
                _ = try model.forward([SequenceInput(tokens: ids, cache: model.makeCache(capacity: ids.count))])
                prefill.append(Double(ids.count) / ((ContinuousClock.now - start) / .seconds(1)))
            } else {
                let cache = model.makeCache(capacity: 16 + decodeTokens)
                _ = try model.forward([SequenceInput(tokens: Array(ids.prefix(16)), cache: cache)])
                let start = ContinuousClock.now
                for i in 0..<decodeTokens {
                    _ = try model.forward([SequenceInput(tokens: [ids[16 + i % 400]], cache: cache)])
                }
                decode.append(Double(decodeTokens) / ((ContinuousClock.now - start) / .seconds(1)))
            }
        }
        let hone = percentile(which == "prefill" ? prefill : decode, 0.5)
        let file = model.file.path.split(separator: "/").last.map(String.init) ?? ""
        emit(["bench": which, "model": file, "threads": Parallel.threads,
              "tokens": which == "prefill" ? ids.count : decodeTokens, "hone_tok_s": hone])
    }
}
