import ArgumentParser
import Foundation
import Llama
import Tensor
import Training

/// `honectl train` — offline LoRA fine-tuning on chat examples.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a LoRA adapter on chat examples and write it as PEFT files.",
        discussion: """
            DATA holds one example per line in OpenAI's chat fine-tuning format, \
            {"messages":[{"role":"user","content":"…"},{"role":"assistant","content":"…"}]}; \
            the loss counts the assistant turns only. The base model stays frozen. Each step \
            takes --batch examples in a seeded shuffled order; the same seed and data give the \
            same adapter. Progress (step, loss, tokens/s) goes to stderr.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Training examples, JSONL.")
    var data: String

    @Option(help: "Directory to write adapter_config.json and adapter_model.safetensors into.")
    var out: String

    @Option(help: "LoRA rank R.")
    var rank: Int = 16

    @Option(help: "LoRA alpha; the update is scaled by alpha / rank.")
    var alpha: Float = 32

    @Option(help: "Comma-separated target modules (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj), or all.")
    var targets: String = "all"

    @Option(help: "AdamW learning rate.")
    var lr: Float = 5e-4

    @Option(name: .customLong("weight-decay"), help: "AdamW decoupled weight decay.")
    var weightDecay: Float = 0

    @Option(help: "Optimizer steps.")
    var steps: Int = 50

    @Option(help: "Examples per step.")
    var batch: Int = 8

    @Option(name: .customLong("micro-batch"), help: "Examples per forward/backward pass (gradients accumulate); default: the whole batch.")
    var microBatch: Int?

    @Flag(help: "Recompute each block's activations in the backward pass (less memory, ~1/3 more time).")
    var checkpointing = false

    @Option(help: "Seed for the adapter's initial A factors and the example order.")
    var seed: UInt64 = 0

    @Option(name: .customLong("gguf-lora"), help: "Also export the adapter to this llama.cpp GGUF LoRA file.")
    var ggufLora: String?

    func validate() throws {
        guard rank > 0 else { throw ValidationError("--rank must be positive") }
        guard alpha > 0 else { throw ValidationError("--alpha must be positive") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number") }
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        if let microBatch { guard microBatch > 0 else { throw ValidationError("--micro-batch must be positive") } }
        _ = try targetList()
    }

    func targetList() throws -> [LoRATarget] {
        if targets == "all" { return LoRATarget.allCases }
        return try targets.split(separator: ",").map { name in
            guard let t = LoRATarget.named(String(name)) else {
                throw ValidationError("unknown target \(name); choose among \(LoRATarget.allCases.map(\.rawValue).joined(separator: ","))")
            }
            return t
        }
    }

    func run() throws {
        let (model, tokenizer) = try modelOptions.load()
        let examples = try ChatExamples.load(path: data, tokenizer: tokenizer, contextLength: model.config.contextLength)
        let config = LoRAConfig(rank: rank, alpha: alpha, targets: try targetList())
        var options = TrainingOptions()
        options.learningRate = lr
        options.weightDecay = weightDecay
        options.microBatch = microBatch ?? batch
        options.checkpointing = checkpointing
        let trainer = try LoRATrainer(model: model, adapter: .initialized(config: config, model: model.config, seed: seed), options: options)
        var order = ExampleOrder(count: examples.count, seed: seed)
        let progress = Progress(total: steps)
        for _ in 0..<steps {
            let report = try trainer.step((0..<batch).map { _ in examples[order.next()] })
            progress.update(report)
        }
        progress.finish()
        try PEFTAdapter.write(trainer.adapter, to: out, model: model,
                              baseModelName: URL(fileURLWithPath: model.file.path).lastPathComponent)
        if let ggufLora { try GGUFLoRAExport.write(trainer.adapter, to: ggufLora, model: model) }
        print("wrote \(out)/\(PEFTAdapter.weightsFile) (rank \(rank), \(config.targets.count) targets, \(steps) steps on \(examples.count) examples)")
    }
}

/// Example indices in a seeded shuffled order, reshuffled after each pass over the data.
struct ExampleOrder {
    private var random: SeededRandom
    private var order: [Int] = []
    private let count: Int

    init(count: Int, seed: UInt64) {
        self.count = count
        random = SeededRandom(seed: seed)
    }

    mutating func next() -> Int {
        if order.isEmpty { order = Array(0..<count).shuffled(using: &random) }
        return order.removeLast()
    }
}

/// A progress bar on stderr: redrawn in place on a terminal, one line per step otherwise.
final class Progress {
    let total: Int
    let isTerminal = isatty(STDERR_FILENO) == 1
    private var done = 0

    init(total: Int) { self.total = total }

    func update(_ report: StepReport) {
        done = report.step
        let width = 24, filled = width * done / max(total, 1)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let line = String(format: "step %d/%d %@ loss %.4f  accuracy %.1f%%  grad norm %.3f  %.0f tokens/s",
                          report.step, total, bar, report.loss, 100 * report.accuracy, report.gradNorm, Double(report.tokens) / max(report.seconds, 1e-9))
        FileHandle.standardError.write(Data((isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
    }

    func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
