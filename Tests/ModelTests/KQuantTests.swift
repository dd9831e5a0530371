import Foundation
import GGUF
import Generation
import Llama
import Testing

/// The real SmolLM2 re-quantized by Hone's own writer to the 5-bit and K-quant types, in the
/// pattern of llama.cpp's Q4_K_M for this model (its 576-wide rows are not a multiple of 256,
/// so K-quants only fit ffn_down): every new type's serving kernels run on real weights.
/// llama.cpp's own re-quantizations are compared below when ops/requantize-model made them.
@Suite("Real model re-quantized to Q5_0, Q5_1, Q4_K, Q5_K, Q6_K", .enabled(if: RealModel.path != nil), .serialized)
struct KQuantTests {
    /// ffn_down cycles Q4_K, Q5_K, Q6_K by layer; the other matrices Q5_0 (even layers) and
    /// Q5_1 (odd); attn_v and token_embd Q8_0 as llama.cpp keeps them; norms F32.
    static func type(of name: String) -> GGMLType {
        guard name.hasPrefix("blk."), let layer = Int(name.split(separator: ".")[1]) else {
            return name == "token_embd.weight" ? .q8_0 : .f32
        }
        if name.hasSuffix("_norm.weight") { return .f32 }
        if name.contains("ffn_down") { return [GGMLType.q4_K, .q5_K, .q6_K][layer % 3] }
        if name.contains("attn_v") { return .q8_0 }
        return layer % 2 == 0 ? .q5_0 : .q5_1
    }

    static let model: LlamaModel = {
        let source = RealModel.model.file
        var writer = GGUFWriter(metadataOf: source)
        for name in source.tensorNames {
            let info = source.tensors[name]!
            writer.addTensor(name, dims: info.dims, type: type(of: name), values: try! source.floats(name))
        }
        let path = NSTemporaryDirectory() + "hone-kquant-\(UUID().uuidString).gguf"
        try! Data(writer.serialized()).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }  // the mapping stays valid
        return try! LlamaModel(path: path)
    }()

    @Test("every new type is in the file, and the serving kernels agree with the exact path on it")
    func servingKernelsMatchExactPath() async throws {
        try await offPool {
            let counts = Dictionary(grouping: Self.model.file.tensors.values, by: \.type).mapValues(\.count)
            #expect(counts[.q4_K] == 10 && counts[.q5_K] == 10 && counts[.q6_K] == 10)
            #expect(counts[.q5_0] == 75 && counts[.q5_1] == 75)  // q, k, o, gate, up of 15 layers each
            var agree = 0, total = 0, absSum = 0.0, count = 0
            for prompt in LogitsParityTests.prompts {
                let exact = try Self.model.positionLogits(prompt.ids, mode: .exact)
                let decode = try Self.model.positionLogits(prompt.ids, mode: .fast, stepwise: true)
                for p in prompt.ids.indices {
                    total += 1
                    if Sampler.argmax(decode[p]) == Sampler.argmax(exact[p]) { agree += 1 }
                    for i in stride(from: 0, to: exact[p].count, by: 97) {
                        absSum += Double(abs(decode[p][i] - exact[p][i]))
                        count += 1
                    }
                }
            }
            let meanAbs = absSum / Double(count)
            print("K-quant model, decode kernels against the exact path: top-1 \(agree)/\(total), mean |Δ| \(meanAbs)")
            #expect(total >= 100)
            #expect(Double(agree) >= 0.98 * Double(total))
            // The Q4_1 model's decode kernels are ~0.0013 from float32 transformers.
            #expect(meanAbs <= 0.01)
        }
    }
}

/// llama.cpp's own re-quantizations of the real model (ops/requantize-model: the Q4_1 file
/// dequantized to float32, then llama.cpp's quantizer) against transformers' float32 logits
/// on the same files (Fixtures/logits-<type>.json). The files are ~100 MB each and need
/// llama-cpp-python to make, so these run where ops/requantize-model has made them
/// (ops/test makes them when the benchmark venv has llama.cpp).
@Suite("llama.cpp's K-quant files: logits against transformers float32", .serialized)
struct KQuantParityTests {
    static func path(_ type: String) -> String? {
        let path = FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/hone/models/SmolLM2-135M-Instruct.\(type).gguf").path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    static func check(_ type: String) throws {
        let model = try LlamaModel(path: path(type)!)
        let reference = try LogitsReference(fixture: "logits-\(type).json", model: model)
        #expect(model.file.sha256 == reference.modelSHA256, "\(type): not the file the fixture was made from; remake it with ops/requantize-model")
        // Exact logits at every position bound greedy text too; prompt chunks run the exact
        // path's products. Kept to these two, ops/test's budget is tight (~25 s for both files).
        try LogitsParityTests.checkExactLogits(reference)
        try LogitsParityTests.checkFastPath(reference, stepwise: true)
    }

    @Test("Q4_K_M (Q5_0, Q4_K, Q6_K, Q8_0): exact within 1e-3, decode kernels closer than llama.cpp", .enabled(if: path("Q4_K_M") != nil))
    func q4KM() async throws { try await offPool { try Self.check("Q4_K_M") } }

    @Test("Q6_K (Q6_K, Q8_0): exact within 1e-3, decode kernels closer than llama.cpp", .enabled(if: path("Q6_K") != nil))
    func q6K() async throws { try await offPool { try Self.check("Q6_K") } }
}
