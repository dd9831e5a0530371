import Foundation
import Llama
import Tensor
import Tokenizer
import Training

/// Seconds per LoRA training step on the real model (`HONE_MODEL`): 8 sequences × 256
/// tokens, loss on every token, rank 16, all seven targets, AdamW. `HONE_BENCH_CHECKPOINTING=1`
/// recomputes blocks in the backward pass; `HONE_BENCH_MICRO_BATCH_TOKENS=N` cuts each step
/// into passes of at most N tokens. Peak RSS is the process's, so ops/bench runs
/// each mode in its own process.
enum TrainBench {
    static let sequences = 8
    static let tokens = 256
    static let steps = 3

    static func run() throws {
        guard let path = ProcessInfo.processInfo.environment["HONE_MODEL"] else {
            throw BenchError(message: "HONE_MODEL is not set (ops/bench sets it)")
        }
        let checkpointing = ProcessInfo.processInfo.environment["HONE_BENCH_CHECKPOINTING"] == "1"
        let microBatchTokens = ProcessInfo.processInfo.environment["HONE_BENCH_MICRO_BATCH_TOKENS"].flatMap { Int($0) }
        let model = try LlamaModel(path: path)
        let tokenizer = try Tokenizer(gguf: model.file)
        let batch = trainBenchTokens(tokenizer).map { TrainingSequence(tokens: $0, lossMask: Array(repeating: true, count: $0.count)) }
        var options = TrainingOptions()
        options.checkpointing = checkpointing
        options.microBatchTokens = microBatchTokens
        let trainer = try LoRATrainer(model: model, adapter: .initialized(config: LoRAConfig(), model: model.config, seed: 1), options: options)
        try trainer.step(batch)   // warm-up: first-touch of weights and buffers
        var times: [Double] = []
        for _ in 0..<steps { times.append(try trainer.step(batch).seconds) }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        emit(["bench": "train-hone", "checkpointing": checkpointing, "micro_batch_tokens": microBatchTokens.map { Double($0) } ?? .nan, "threads": Parallel.threads,
              "s_per_step": percentile(times, 0.5), "peak_rss_mib": Double(usage.ru_maxrss) / 1024])
    }
}

/// The benchmark's 8 × 256 token ids (also what ops/bench-torch-train.py reads).
func trainBenchTokens(_ tokenizer: Tokenizer) -> [[Int]] {
    let text = Array(repeating: "The history of science is the study of the development of science and scientific knowledge, including both the natural and social sciences.", count: 64).joined(separator: " ")
    let ids = tokenizer.encode(text)
    return (0..<TrainBench.sequences).map { s in Array(ids[(s * 7)..<(s * 7 + TrainBench.tokens)]) }
}
