import Foundation
import Llama
import Tensor
import Tokenizer

/// Hone's decode and prefill speed on the real model (`HONE_MODEL`), printed beside
/// llama.cpp's figures from the same run when `HONE_BENCH_LLAMACPP` names the JSON file
/// ops/bench-llamacpp.py wrote.
enum EngineBench {
    static let promptTokens = 512
    static let decodeTokens = 128
    static let repeats = 3

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
        var reference: Double?
        if let file = ProcessInfo.processInfo.environment["HONE_BENCH_LLAMACPP"],
           let data = FileManager.default.contents(atPath: file),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            reference = json[which == "prefill" ? "prefill_tok_s" : "decode_tok_s"] as? Double
        }
        if which == "prefill" {
            emit(["bench": "prefill", "model": model.file.path.split(separator: "/").last.map(String.init) ?? "", "threads": Parallel.threads, "prompt_tokens": ids.count, "hone_tok_s": hone,
                  "llamacpp_tok_s": reference ?? -1, "ratio": reference.map { (hone / $0 * 100).rounded() / 100 } ?? -1])
        } else {
            emit(["bench": "decode", "model": model.file.path.split(separator: "/").last.map(String.init) ?? "", "threads": Parallel.threads, "tokens": decodeTokens, "hone_tok_s": hone,
                  "llamacpp_tok_s": reference ?? -1, "ratio": reference.map { (hone / $0 * 100).rounded() / 100 } ?? -1])
        }
    }


}
