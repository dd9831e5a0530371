import CKernels
import Foundation
import Llama
import Tensor

/// How a LoRA adapter is trained. Defaults follow DESIGN.md and transformers' Trainer.
public struct TrainingOptions: Sendable {
    /// AdamW learning rate (DESIGN.md: 5e-4).
    public var learningRate: Float = 5e-4
    /// AdamW decoupled weight decay.
    public var weightDecay: Float = 0
    /// AdamW β₁.
    public var beta1: Float = 0.9
    /// AdamW β₂.
    public var beta2: Float = 0.999
    /// AdamW ε.
    public var epsilon: Float = 1e-8
    /// Gradients are scaled down to this global L2 norm when larger (nil: no clipping).
    public var maxGradNorm: Float? = 1
    /// Sequences per forward/backward pass; a step's batch is split into micro-batches
    /// whose gradients accumulate, giving the same update as one pass over all of it.
    public var microBatch = 8
    /// Tokens per forward/backward pass, when set: a micro-batch also ends before the
    /// sequence that would take it past this (a longer sequence runs alone). What a pass
    /// keeps for its backward is ~1 MB per token on SmolLM2-135M (30 blocks × ~8.4 K floats),
    /// so this bounds training's memory whatever the sequences' lengths.
    public var microBatchTokens: Int?
    /// Recompute each block in the backward pass instead of keeping its activations.
    public var checkpointing = false

    public init() {}
}

/// What one optimizer step did.
public struct StepReport: Sendable {
    /// 1 for the first step.
    public let step: Int
    /// Mean loss per target token, before the update (nats).
    public let loss: Double
    /// Teacher-forced top-1 accuracy on the batch's target tokens, before the update.
    public let accuracy: Double
    /// Global gradient norm before clipping.
    public let gradNorm: Double
    /// The learning rate the step applied.
    public let learningRate: Double
    /// Tokens the loss counted.
    public let targetTokens: Int
    /// All tokens of the batch.
    public let tokens: Int
    /// Wall time of the step.
    public let seconds: Double
}

/// Trains one adapter on a frozen base: each step runs forward and backward over the batch,
/// clips, and applies AdamW. Deterministic for the same model, adapter and batches. A step
/// whose loss, gradients or new weights are not finite throws and leaves the adapter (and
/// the optimizer state) as they were.
public final class LoRATrainer {
    /// The frozen base.
    public let model: LlamaModel
    public let options: TrainingOptions
    /// The adapter as trained so far: a copy, never the one serving.
    public private(set) var adapter: LoRAAdapter
    private var optimizer: AdamW

    /// A trainer for a copy of `adapter` on `model`; throws when the adapter does not fit it.
    public init(model: LlamaModel, adapter: LoRAAdapter, options: TrainingOptions = TrainingOptions()) throws {
        try adapter.validate(for: model.config)
        Self.configureHeap
        self.model = model
        self.adapter = adapter
        self.options = options
        optimizer = AdamW(for: adapter, model: model.config, learningRate: options.learningRate, beta1: options.beta1,
                          beta2: options.beta2, epsilon: options.epsilon, weightDecay: options.weightDecay)
    }

    /// Steps taken.
    public var steps: Int { optimizer.step }

    /// A step allocates and frees the same large activation buffers in every block; glibc
    /// would return each to the kernel, which zeroes its pages again when it comes back
    /// (~8% of a step, measured with perf). Once per process, keep them in the heap
    /// (`hone_configure_heap`; the executables already did, at start).
    private static let configureHeap: Void = hone_configure_heap()

    /// Gives the buffers kept for the next step back to the kernel, once an update is over:
    /// otherwise resident memory stays at the training peak until the next update (a soak's
    /// RSS swung between 1.1 and 1.5 GB with the phase it was read in). Costs the next
    /// update one page fault per page, not every step.
    public static func releaseFreedMemory() {
        _ = hone_release_freed_memory()
    }

    /// The loss and gradients of `batch` without an update (for parity checks).
    public func gradients(_ batch: [TrainingSequence]) throws -> (loss: LossSum, gradients: LoRAAdapter) {
        let targets = batch.reduce(0) { $0 + $1.targetCount }
        guard targets > 0 else { throw TrainingError("the batch has no target tokens (no assistant tokens to learn)") }
        var gradients = LoRAAdapter.zeros(config: adapter.config, model: model.config)
        var loss = LossSum()
        for micro in Self.microBatches(batch, sequences: options.microBatch, tokens: options.microBatchTokens) {
            let part = try model.accumulateGradients(micro, adapter: adapter, gradScale: 1 / Float(targets),
                                                     checkpointing: options.checkpointing, into: &gradients)
            loss.sum += part.sum
            loss.tokens += part.tokens
            loss.correct += part.correct
        }
        return (loss, gradients)
    }

    /// `batch` cut, in order, into runs of at most `sequences` sequences and `tokens` tokens
    /// (when set; a sequence longer than that runs alone).
    static func microBatches(_ batch: [TrainingSequence], sequences: Int, tokens: Int?) -> [[TrainingSequence]] {
        var out: [[TrainingSequence]] = [], current: [TrainingSequence] = [], held = 0
        for sequence in batch {
            let full = current.count >= max(sequences, 1) || (tokens.map { held + sequence.tokens.count > $0 } ?? false)
            if full && !current.isEmpty {
                out.append(current)
                current = []
                held = 0
            }
            current.append(sequence)
            held += sequence.tokens.count
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// One optimizer step over `batch`.
    @discardableResult
    public func step(_ batch: [TrainingSequence]) throws -> StepReport {
        let start = ContinuousClock.now
        var (loss, gradients) = try gradients(batch)
        let stepNumber = optimizer.step + 1
        guard loss.mean.isFinite else { throw TrainingError("step \(stepNumber): the loss is \(loss.mean); the adapter is unchanged") }
        let norm = gradients.norm
        guard norm.isFinite else { throw TrainingError("step \(stepNumber): a gradient is NaN or infinite; the adapter is unchanged") }
        if let maxNorm = options.maxGradNorm, norm > Double(maxNorm) {
            // As torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6).
            gradients.scale(by: Float(Double(maxNorm) / (norm + 1e-6)))
        }
        var candidate = adapter, nextOptimizer = optimizer
        OpProfile.measure("adamw") { nextOptimizer.update(&candidate, gradients: gradients) }
        guard candidate.isFinite else { throw TrainingError("step \(stepNumber): the update made a weight NaN or infinite; the adapter is unchanged") }
        adapter = candidate
        optimizer = nextOptimizer
        let elapsed = ContinuousClock.now - start
        return StepReport(step: stepNumber, loss: loss.mean, accuracy: loss.accuracy, gradNorm: norm,
                          learningRate: Double(nextOptimizer.learningRate), targetTokens: loss.tokens,
                          tokens: batch.reduce(0) { $0 + $1.tokens.count },
                          seconds: elapsed / .seconds(1))
    }
}
