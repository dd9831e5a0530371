import Foundation
import GGUF
import Llama
import Testing

@Suite("Llama engine on tiny generated models")
struct TinyModelTests {
    func maxDiff(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).map { abs(Double($0) - $1) }.max()!
    }

    @Test("the exact path equals a float64 reference written from the definition (GQA, tied and untied heads)",
          arguments: [true, false])
    func exactMatchesReference(tied: Bool) throws {
        let path = try TinyModel.write(.init(tied: tied))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let tokens = [3, 17, 99, 5, 5, 42, 150, 0, 7, 11, 13]  // odd length
        let ours = try model.forward([SequenceInput(tokens: tokens, cache: model.makeCache(), allLogits: true)], mode: .exact)[0]
        let reference = try TinyModel.referenceLogits(file: model.file, tokens: tokens)
        for p in tokens.indices {
            #expect(maxDiff(ours[p], reference[p]) < 1e-4, "position \(p)")
        }
    }

    @Test("prefill then token-by-token decode gives the logits of one full prefill")
    func incrementalDecodeMatchesPrefill() throws {
        let path = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let tokens = (0..<20).map { ($0 * 37) % 160 }
        let full = try model.forward([SequenceInput(tokens: tokens, cache: model.makeCache(), allLogits: true)], mode: .exact)[0]
        let cache = model.makeCache()
        var stepwise = try model.forward([SequenceInput(tokens: Array(tokens.prefix(5)), cache: cache, allLogits: true)], mode: .exact)[0]
        for t in tokens.dropFirst(5) {
            stepwise += try model.forward([SequenceInput(tokens: [t], cache: cache)], mode: .exact)[0]
        }
        #expect(cache.count == tokens.count)
        for p in tokens.indices {
            #expect(zip(full[p], stepwise[p]).map { abs($0 - $1) }.max()! < 1e-4, "position \(p)")
        }
    }

    @Test("sequences of different lengths decoded in one batch equal each decoded alone", arguments: [MatmulMode.exact, .fast])
    func batchEqualsSingles(mode: MatmulMode) throws {
        let path = try TinyModel.write(.init(type: .q8_0))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let prompts = [[1, 2, 3], [9], [100, 20, 30, 40, 50, 60, 70]]
        let alone = try prompts.map { try model.forward([SequenceInput(tokens: $0, cache: model.makeCache(), allLogits: true)], mode: mode)[0] }
        let batched = try model.forward(prompts.map { SequenceInput(tokens: $0, cache: model.makeCache(), allLogits: true) }, mode: mode)
        for (a, b) in zip(alone, batched) {
            for (x, y) in zip(a, b) { #expect(zip(x, y).map { abs($0 - $1) }.max()! < 1e-4) }
        }
    }

    @Test("a prompt may fill the context exactly; one more token is refused with a clear error")
    func contextLimit() throws {
        let path = try TinyModel.write(.init(context: 48))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let cache = model.makeCache()
        let logits = try model.forward([SequenceInput(tokens: (0..<48).map { $0 % 160 }, cache: cache)], mode: .fast)
        #expect(logits[0][0].allSatisfy { $0.isFinite })
        #expect(throws: ModelError.self) { try model.forward([SequenceInput(tokens: [1], cache: cache)]) }
        #expect(throws: ModelError.self) { try model.forward([SequenceInput(tokens: [160], cache: model.makeCache())]) }
        #expect(throws: ModelError.self) { try model.forward([SequenceInput(tokens: [], cache: model.makeCache())]) }
    }

    @Test("quantized tiny models (every type but F32) stay close to their own exact path",
          arguments: GGMLType.allCases.filter { $0 != .f32 })
    func quantizedTypesRun(type: GGMLType) throws {
        // K-quant rows are multiples of 256 values long.
        let spec = type.blockSize > 32 ? TinyModel.Spec(width: 256, ffn: 512, type: type) : TinyModel.Spec(type: type)
        let path = try TinyModel.write(spec)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let tokens = [5, 6, 7, 8, 9, 10]
        let exact = try model.forward([SequenceInput(tokens: tokens, cache: model.makeCache(), allLogits: true)], mode: .exact)[0]
        let fast = try model.forward([SequenceInput(tokens: tokens, cache: model.makeCache(), allLogits: true)], mode: .fast)[0]
        let reference = try TinyModel.referenceLogits(file: model.file, tokens: tokens)
        for p in tokens.indices {
            #expect(maxDiff(exact[p], reference[p]) < 1e-4)
            let scale = reference[p].map(abs).max()!
            #expect(zip(fast[p], exact[p]).map { abs($0 - $1) }.max()! < Float(0.05 * scale + 0.05))
        }
    }

    @Test("corrupt, truncated and unsupported files are refused with the reason")
    func errorPaths() throws {
        let good = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: good) }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        func attempt(_ data: Data, _ expected: String) throws {
            let path = NSTemporaryDirectory() + "hone-bad-\(UUID().uuidString).gguf"
            try data.write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try LlamaModel(path: path)
                Issue.record("loaded a bad file; expected: \(expected)")
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
        try attempt(bytes.prefix(20), "not a GGUF file")
        try attempt(Data("GGUF".utf8) + Data([9, 0, 0, 0]) + Data(count: 16), "GGUF version 9 is not supported")
        try attempt(bytes.prefix(300), "truncated")
        try attempt(bytes.prefix(bytes.count - 100), "file is truncated: tensor")
        var wrongMagic = bytes
        wrongMagic[0] = 0x58
        try attempt(wrongMagic, "not a GGUF file")

        let gpt2 = try TinyModel.write { $0.set("general.architecture", .string("gpt2")) }
        defer { try? FileManager.default.removeItem(atPath: gpt2) }
        try attempt(try Data(contentsOf: URL(fileURLWithPath: gpt2)), "architecture gpt2 is not supported")
        let missing = try TinyModel.write { $0.set("llama.block_count", .uint32(3)) }
        defer { try? FileManager.default.removeItem(atPath: missing) }
        try attempt(try Data(contentsOf: URL(fileURLWithPath: missing)), "tensor blk.2.attn_norm.weight is missing")
        // An unsupported tensor type id (IQ2_XXS = 16) patched into the first tensor info: the
        // message names it and what Hone reads.
        var patched = bytes
        let name = Data("token_embd.weight".utf8)
        let at = patched.range(of: name)!.upperBound + 4 + 16  // n_dims, two dims
        patched[at] = 16
        try attempt(patched, "type IQ2_XXS, which is not supported (Hone reads F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16)")
    }
}

/// Architectures beyond SmolLM2's, on tiny random models made by make_arch_fixtures.py and
/// run by transformers (float32, loading the same GGUF) and llama.cpp.
@Suite("Other architectures against transformers float32", .serialized)
struct ArchitectureTests {
    @Test("Qwen2 (q/k/v biases, RoPE over half-split pairs, untied head): exact logits within 1e-3, greedy equal")
    func qwen2() throws {
        let model = try LlamaModel(path: GGUFTests.fixtures.appendingPathComponent("tiny-qwen2.gguf").path)
        #expect(model.config.architecture == .qwen2)
        let reference = try LogitsReference(fixture: "logits-tiny-qwen2.json", model: model)
        #expect(model.file.sha256 == reference.modelSHA256)
        try LogitsParityTests.checkExactLogits(reference)
        try LogitsParityTests.checkExactGreedy(reference, minimum: 40)
        try LogitsParityTests.checkFastPath(reference, stepwise: true)
    }

    @Test("Llama 3.1 (rope_freqs frequency factors, untied head): exact logits within 0.05 of llama.cpp (whose KV cache is float16), greedy equal")
    func llama3() throws {
        let model = try LlamaModel(path: GGUFTests.fixtures.appendingPathComponent("tiny-llama3.gguf").path)
        let reference = try LogitsReference(fixture: "logits-tiny-llama3.json", model: model)
        #expect(model.file.sha256 == reference.modelSHA256)
        // transformers ignores rope_freqs in a GGUF (0.4-1.2 mean |Δ| from llama.cpp on this
        // model), so llama.cpp is the reference here, at its own float32 precision.
        try LogitsParityTests.checkExactLogits(reference, tolerance: 0.05)
        try LogitsParityTests.checkExactGreedy(reference, minimum: 40)
    }
}
