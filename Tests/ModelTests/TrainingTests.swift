import Foundation
import GGUF
@testable import Llama
import Tensor
import Testing
import Tokenizer
@testable import Training
import Generation

/// The training engine on tiny generated models: gradients against finite differences of
/// the whole model, checkpointing and accumulation, failure handling, isolation, file I/O.
@Suite("Training engine")
struct TrainingTests {
    static let config = LoRAConfig(rank: 4, alpha: 8)

    static func sequences() -> [TrainingSequence] {
        [TrainingSequence(tokens: [5, 17, 99, 3, 42, 150, 7, 8, 9, 11], lossMask: [false, false, false, true, true, true, true, false, true, true]),
         TrainingSequence(tokens: [1, 2, 3, 4, 5, 6], lossMask: [false, true, true, true, true, true]),
         TrainingSequence(tokens: [60, 61, 62, 63], lossMask: [false, false, true, true])]
    }

    static func withTinyModel<T>(seed: UInt64 = 1, _ body: (LlamaModel) throws -> T) throws -> T {
        let path = try TinyModel.write(seed: seed)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(try LlamaModel(path: path))
    }

    static func seeded(_ model: LlamaModel, seed: UInt64 = 3) -> LoRAAdapter {
        TrainingParityTests.seededAdapter(config, model.config, seed: seed, scaleA: 0.2, scaleB: 0.1)
    }

    @Test("LoRA gradients of the whole model equal central differences of its loss")
    func wholeModelFiniteDifferences() throws {
        try Self.withTinyModel { model in
            let adapter = Self.seeded(model)
            let batch = Self.sequences()
            let targets = batch.reduce(0) { $0 + $1.targetCount }
            var gradients = LoRAAdapter.zeros(config: adapter.config, model: model.config)
            _ = try model.accumulateGradients(batch, adapter: adapter, gradScale: 1, checkpointing: false, into: &gradients)
            #expect(targets > 0)
            let step: Float = 1e-2
            for (i, key) in adapter.keys.enumerated() where i % 3 == 0 {
                for (part, index) in [("A", 5), ("B", 3)] {
                    func loss(_ delta: Float) throws -> Double {
                        var a = adapter
                        if part == "A" { a.weights[key]!.a[index] += delta } else { a.weights[key]!.b[index] += delta }
                        return try model.loss(batch, adapter: a).sum
                    }
                    let numeric = (try loss(step) - loss(-step)) / Double(2 * step)
                    let analytic = Double(part == "A" ? gradients.weights[key]!.a[index] : gradients.weights[key]!.b[index])
                    #expect(abs(numeric - analytic) <= 2e-3 + 1e-2 * abs(numeric),
                            "layer \(key.layer) \(key.target) \(part)[\(index)]: numeric \(numeric), analytic \(analytic)")
                }
            }
        }
    }

    @Test("sequences that begin alike are packed with their common start once: the loss and gradients of packing each whole")
    func sharedPrefixPacking() throws {
        try Self.withTinyModel { model in
            let adapter = Self.seeded(model)
            // A common start of 4 tokens (the 5th differs in one sequence); targets after it.
            let batch = [
                TrainingSequence(tokens: [5, 17, 99, 3, 42, 150, 7, 8], lossMask: [false, false, false, false, false, true, true, true]),
                TrainingSequence(tokens: [5, 17, 99, 3, 42, 61, 62], lossMask: [false, false, false, false, false, false, true]),
                TrainingSequence(tokens: [5, 17, 99, 3, 11, 12, 13, 14, 15], lossMask: [false, false, false, false, false, true, true, false, true]),
            ]
            #expect(PackedBatch.sharedPrefix(batch) == 4)
            #expect(PackedBatch.sharedPrefix(Self.sequences()) == 0)
            var together = LoRAAdapter.zeros(config: adapter.config, model: model.config), apart = together
            let loss = try model.accumulateGradients(batch, adapter: adapter, gradScale: 1, checkpointing: false, into: &together)
            var separate = LossSum()
            for seq in batch {
                let part = try model.accumulateGradients([seq], adapter: adapter, gradScale: 1, checkpointing: false, into: &apart)
                separate.sum += part.sum
                separate.tokens += part.tokens
                separate.correct += part.correct
            }
            #expect(loss.tokens == separate.tokens && loss.correct == separate.correct)
            #expect(abs(loss.sum - separate.sum) < 1e-5 * abs(separate.sum))
            #expect(abs(try model.loss(batch, adapter: adapter).sum - separate.sum) < 1e-5 * abs(separate.sum))
            #expect(TrainingParityTests.worstRelativeError(together, apart).0 < 1e-4)
        }
    }

    @Test("checkpointing gives the same gradients; so does splitting the batch into micro-batches, by count or by tokens")
    func checkpointingAndAccumulation() throws {
        try Self.withTinyModel { model in
            let adapter = Self.seeded(model)
            var plain = TrainingOptions()
            plain.microBatch = 8
            var checkpointed = plain
            checkpointed.checkpointing = true
            var micro = plain
            micro.microBatch = 1
            var tokenBound = plain
            tokenBound.microBatchTokens = 12
            let batch = Self.sequences()
            // 10, 6 and 4 tokens: a 12-token bound passes [10] and [6, 4].
            #expect(LoRATrainer.microBatches(batch, sequences: 8, tokens: 12).map { $0.map(\.tokens.count) } == [[10], [6, 4]])
            #expect(LoRATrainer.microBatches(batch, sequences: 8, tokens: 5).map(\.count) == [1, 1, 1])
            #expect(LoRATrainer.microBatches(batch, sequences: 2, tokens: nil).map(\.count) == [2, 1])
            let reference = try LoRATrainer(model: model, adapter: adapter, options: plain).gradients(batch)
            let recomputed = try LoRATrainer(model: model, adapter: adapter, options: checkpointed).gradients(batch)
            #expect(recomputed.gradients == reference.gradients)
            #expect(recomputed.loss == reference.loss)
            for options in [micro, tokenBound] {
                let accumulated = try LoRATrainer(model: model, adapter: adapter, options: options).gradients(batch)
                #expect(TrainingParityTests.worstRelativeError(accumulated.gradients, reference.gradients).0 < 1e-5)
                #expect(abs(accumulated.loss.sum - reference.loss.sum) < 1e-6 * abs(reference.loss.sum))
            }
        }
    }

    @Test("training is deterministic, and touches neither the base model nor the adapter it copied")
    func determinismAndIsolation() throws {
        try Self.withTinyModel { model in
            let original = Self.seeded(model)
            let tokens = [9, 8, 7, 6, 5]
            func logits(_ adapter: LoRAAdapter?) throws -> [[Float]] {
                try model.forward([SequenceInput(tokens: tokens, cache: model.makeCache(), allLogits: true, adapter: adapter)], mode: .exact)[0]
            }
            let baseBefore = try logits(nil), adaptedBefore = try logits(original)
            let first = try LoRATrainer(model: model, adapter: original)
            let second = try LoRATrainer(model: model, adapter: original)
            for _ in 0..<3 {
                try first.step(Self.sequences())
                try second.step(Self.sequences())
            }
            #expect(first.adapter == second.adapter)
            #expect(first.adapter != original)
            #expect(try logits(nil) == baseBefore)
            #expect(try logits(original) == adaptedBefore)
        }
    }

    @Test("a step whose loss or weights are not finite throws and leaves the adapter unchanged")
    func nonFiniteStepsAreRejected() throws {
        try Self.withTinyModel { model in
            var broken = Self.seeded(model)
            broken.weights[LoRAKey(layer: 0, target: .v)]!.a[0] = .nan
            let trainer = try LoRATrainer(model: model, adapter: broken)
            #expect(throws: TrainingError.self) { try trainer.step(Self.sequences()) }
            #expect(trainer.steps == 0)
            #expect(trainer.adapter.weights[LoRAKey(layer: 0, target: .v)]!.a[0].isNaN)

            // A diverging learning rate: weights blow up on the first step, the second fails.
            var options = TrainingOptions()
            options.learningRate = 1e30
            options.maxGradNorm = nil
            let diverging = try LoRATrainer(model: model, adapter: Self.seeded(model), options: options)
            try diverging.step(Self.sequences())
            let afterFirst = diverging.adapter
            do {
                try diverging.step(Self.sequences())
                Issue.record("the second step should have failed")
            } catch let error as TrainingError {
                #expect(error.description.contains("unchanged"))
            }
            #expect(diverging.adapter == afterFirst)
            #expect(diverging.steps == 1)
        }
    }

    @Test("one batch carries sequences with different adapters (and none) and several of one prepared adapter: each equals running alone")
    func mixedAdapterBatch() throws {
        try Self.withTinyModel { model in
            let x = Self.seeded(model, seed: 3), y = Self.seeded(model, seed: 4)
            // Served adapters are prepared (Bᵀ kept); neighbours of one preparation take the
            // LoRA kernel together, five rows here (past its four-row blocks).
            let served = x.preparedForInference()
            #expect(served == x && served.inferenceID != nil && x.inferenceID == nil)
            let prompt = [3, 1, 4, 1, 5, 9, 2, 6]
            func alone(_ adapter: LoRAAdapter?, _ tokens: [Int]) throws -> [Float] {
                let cache = model.makeCache()
                _ = try model.forward([SequenceInput(tokens: prompt, cache: cache, adapter: adapter)])
                return try model.forward([SequenceInput(tokens: tokens, cache: cache, adapter: adapter)])[0].last!
            }
            let adapters: [LoRAAdapter?] = [x, nil, y, served, served, served, served, served]
            let caches = adapters.map { _ in model.makeCache() }
            for (cache, adapter) in zip(caches, adapters) {
                _ = try model.forward([SequenceInput(tokens: prompt, cache: cache, adapter: adapter)])
            }
            let together = try model.forward(zip(caches, adapters).map { SequenceInput(tokens: [7], cache: $0.0, adapter: $0.1) })
            let xAlone = try alone(x, [7])
            #expect(together[0][0] == xAlone)
            #expect(together[1][0] == (try alone(nil, [7])))
            #expect(together[2][0] == (try alone(y, [7])))
            for i in 3..<8 { #expect(together[i][0] == xAlone, "sequence \(i)") }
            #expect(together[0][0] != together[1][0] && together[0][0] != together[2][0])
            // A prompt of several rows with the prepared adapter: the same bits as without.
            let cache = model.makeCache()
            let chunk = try model.forward([SequenceInput(tokens: prompt + [7], cache: cache, allLogits: true, adapter: served)])[0].last!
            #expect(chunk == (try model.forward([SequenceInput(tokens: prompt + [7], cache: model.makeCache(), allLogits: true, adapter: x)])[0].last!))
        }
    }

    @Test("training's products on quantized weights (dequantized a tile at a time on each thread) equal float products of the whole dequantized matrix",
          arguments: [GGMLType.q4_1, .q8_0, .q6_K, .f16])
    func tiledProducts(type: GGMLType) throws {
        // A head of 1 300 rows: two tiles per thread (of 325 rows).
        let spec = type.blockSize > 32 ? TinyModel.Spec(width: 256, ffn: 512, vocab: 1300, type: type) : TinyModel.Spec(vocab: 1300, type: type)
        let path = try TinyModel.write(spec)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        #expect(model.output.rows > 2 * model.output.trainingTileRows)
        for m in [model.output, model.layers[0].down] {
            var dense = [Float](repeating: 0, count: m.rows * m.cols)
            dense.withUnsafeMutableBufferPointer { d in for r in 0..<m.rows { m.row(r, into: d.baseAddress! + r * m.cols) } }
            let reference = FloatWeight(dense, rows: m.rows, cols: m.cols)
            var seed: UInt64 = 5
            let n = 7
            let x = TinyModel.values(n * m.cols, seed: &seed, scale: 1), dy = TinyModel.values(n * m.rows, seed: &seed, scale: 1)
            var y = [Float](repeating: 0, count: n * m.rows), yRef = y
            m.product(x, count: n, into: &y)
            reference.product(x, count: n, into: &yRef)
            // dx starts non-zero: the product adds into it.
            let start = TinyModel.values(n * m.cols, seed: &seed, scale: 1)
            var dx = start, dxRef = start
            m.accumulateTransposedProduct(dy, count: n, into: &dx)
            reference.accumulateTransposedProduct(dy, count: n, into: &dxRef)
            #expect(zip(y, yRef).map { abs($0 - $1) }.max()! < 1e-3)
            #expect(zip(dx, dxRef).map { abs($0 - $1) }.max()! < 1e-3)
            #expect(zip(dx, start).map { abs($0 - $1) }.max()! > 0.1)
        }
    }

    @Test("PEFT files round-trip; adapters for another base model, rank or shape are refused with the reason")
    func peftFiles() throws {
        try Self.withTinyModel { model in
            let adapter = Self.seeded(model)
            let dir = NSTemporaryDirectory() + "hone-adapter-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try PEFTAdapter.write(adapter, to: dir, model: model, baseModelName: "tiny")
            #expect(try PEFTAdapter.read(from: dir, model: model) == adapter)

            _ = try Self.withTinyModel(seed: 2) { other in
                #expect { try PEFTAdapter.read(from: dir, model: other) } throws: { error in
                    "\(error)".contains("trained on base model")
                }
            }
            let configPath = dir + "/" + PEFTAdapter.configFile
            let config = try String(contentsOfFile: configPath, encoding: .utf8)
            try config.replacingOccurrences(of: "\"r\":4", with: "\"r\":8").write(toFile: configPath, atomically: true, encoding: .utf8)
            #expect { try PEFTAdapter.read(from: dir, model: model) } throws: { error in
                "\(error)".contains("has shape [4, 64]") && "\(error)".contains("need [8, 64]")
            }
            try config.replacingOccurrences(of: "\"use_dora\":false", with: "\"use_dora\":true").write(toFile: configPath, atomically: true, encoding: .utf8)
            #expect { try PEFTAdapter.read(from: dir, model: model) } throws: { error in "\(error)".contains("use_dora") }
        }
    }

    @Test("GGUF LoRA export: llama.cpp's adapter metadata and tensor names and shapes")
    func ggufExport() throws {
        try Self.withTinyModel { model in
            let adapter = Self.seeded(model)
            let path = NSTemporaryDirectory() + "hone-lora-\(UUID().uuidString).gguf"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try GGUFLoRAExport.write(adapter, to: path, model: model)
            let file = try GGUFFile(path: path)
            #expect(file.metadata["general.type"]?.stringValue == "adapter")
            #expect(file.metadata["adapter.type"]?.stringValue == "lora")
            #expect(file.metadata["adapter.lora.alpha"]?.doubleValue == 8)
            #expect(file.tensors.count == 2 * 7 * model.config.layers)
            #expect(file.tensors["blk.1.ffn_down.weight.lora_a"]?.dims == [96, 4])
            #expect(file.tensors["blk.1.ffn_down.weight.lora_b"]?.dims == [4, 64])
            #expect(try file.floats("blk.0.attn_q.weight.lora_b") == adapter.weights[LoRAKey(layer: 0, target: .q)]!.b)
        }
    }
}

/// Learning on the real model: the acceptance bar of a fine-tuning engine.
@Suite("Training SmolLM2", .enabled(if: RealModel.path != nil, "the real model is fetched by ops/fetch-model"))
struct RealModelTrainingTests {
    @Test("8 short chat examples are learned to ≥ 95% token accuracy within 100 steps, and greedy answers follow")
    func overfit() async throws {
        try await offPool {
            let model = RealModel.model, tokenizer = RealModel.tokenizer
            let examples = try ChatExamples.load(path: GGUFTests.fixtures.appendingPathComponent("overfit.jsonl").path,
                                                 tokenizer: tokenizer, contextLength: model.config.contextLength)
            #expect(examples.count == 8)
            var options = TrainingOptions()
            options.learningRate = 2e-3
            let trainer = try LoRATrainer(model: model, adapter: .initialized(config: LoRAConfig(), model: model.config, seed: 1), options: options)
            let before = try model.loss(examples, adapter: trainer.adapter)
            var steps = 0
            while steps < 100 {
                steps += 1
                let report = try trainer.step(examples)
                if report.accuracy >= 0.95 { break }   // measured before this step's update
            }
            let after = try model.loss(examples, adapter: trainer.adapter)
            print("overfit: accuracy \(before.accuracy) → \(after.accuracy), loss \(before.mean) → \(after.mean) in \(steps) steps")
            #expect(after.accuracy >= 0.95, "accuracy \(after.accuracy) after \(steps) steps")
            #expect(before.accuracy < 0.9 && after.mean < before.mean / 10)

            let prompt = tokenizer.chatTemplate
                .tokenize([ChatMessage(role: "user", content: "What is the capital of Zorbania?")], with: tokenizer)
            let answer = try Generator(model: model, tokenizer: tokenizer, adapter: trainer.adapter)
                .generate(GenerationRequest(promptTokens: prompt, maxTokens: 24)).text
            #expect(answer.contains("Quellport"), "answered: \(answer)")
        }
    }
}
