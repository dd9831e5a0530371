import Foundation
import Generation
import JSON
import Llama
import Testing

/// What make_fixtures.py recorded for one model file: transformers' float32 logits on the
/// same GGUF (per position the top 20 and 256 fixed random vocabulary entries, the mean and
/// std of all V logits, and the greedy continuation with its top-1 margins), and how far
/// llama.cpp's own logits on that file are from them.
struct LogitsReference: Sendable {
    struct Position {
        let top: [(Int, Float)]
        let sample: [Float]
        let mean: Double
        let std: Double
    }
    struct Prompt {
        let ids: [Int]
        let positions: [Position]
        let greedy: [Int]
        let margins: [Double]
    }

    /// The fixture's file name, which names the model file it was made from.
    let name: String
    let model: LlamaModel
    let sampleIndices: [Int]
    let prompts: [Prompt]
    let llamacppMeanAbs: Double
    let llamacppAgreement: Double
    /// The file's sha256 when the fixture names it (K-quant fixtures do).
    let modelSHA256: String?

    init(fixture name: String, model: LlamaModel) throws {
        let fixture = try JSONValue(parsing: Data(contentsOf: GGUFTests.fixtures.appendingPathComponent(name)))
        self.name = name
        self.model = model
        sampleIndices = fixture["sample_indices"]!.arrayValue!.map { $0.intValue! }
        prompts = fixture["prompts"]!.arrayValue!.map { p in
            Prompt(
                ids: p["ids"]!.arrayValue!.map { $0.intValue! },
                positions: p["positions"]!.arrayValue!.map { pos in
                    Position(top: pos["top"]!.arrayValue!.map { ($0.arrayValue![0].intValue!, Float($0.arrayValue![1].doubleValue!)) },
                             sample: pos["sample"]!.arrayValue!.map { Float($0.doubleValue!) },
                             mean: pos["mean"]!.doubleValue!, std: pos["std"]!.doubleValue!)
                },
                greedy: p["greedy"]!.arrayValue!.map { $0.intValue! },
                margins: p["greedy_margins"]!.arrayValue!.map { $0.doubleValue! })
        }
        llamacppMeanAbs = fixture["llamacpp_mean_abs_diff"]!.doubleValue!
        llamacppAgreement = fixture["llamacpp_top1_agreement"]!.doubleValue!
        modelSHA256 = fixture["model_sha256"]?.stringValue
    }
}

/// Logits of the real model against transformers' float32 logits on the same GGUF
/// (Fixtures/logits.json, made by make_fixtures.py).
@Suite("Real model: logits against transformers float32", .enabled(if: RealModel.path != nil), .serialized)
struct LogitsParityTests {
    static let reference = try! LogitsReference(fixture: "logits.json", model: RealModel.model)
    static var prompts: [LogitsReference.Prompt] { reference.prompts }

    @Test("exact path: logits within 1e-3 of float32 transformers at every position of every prompt")
    func exactLogits() async throws { try await offPool { try Self.checkExactLogits(Self.reference) } }

    /// Every compared logit within `tolerance` of the reference's (1e-3 against transformers
    /// float32; llama.cpp's own float path, a reference where transformers cannot read a
    /// file, is itself ~1e-3 from float32 on average).
    static func checkExactLogits(_ reference: LogitsReference, tolerance: Float = 1e-3) throws {
        let (prompts, sampleIndices) = (reference.prompts, reference.sampleIndices)
        #expect(prompts.count >= 4)
        var worst: Float = 0
        for prompt in prompts {
            let ours = try reference.model.positionLogits(prompt.ids, mode: .exact)
            for (p, ref) in prompt.positions.enumerated() {
                let row = ours[p]
                for (i, v) in ref.top { worst = max(worst, abs(row[i] - v)) }
                for (j, i) in sampleIndices.enumerated() { worst = max(worst, abs(row[i] - ref.sample[j])) }
                let mean = row.reduce(0.0) { $0 + Double($1) } / Double(row.count)
                let std = (row.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(row.count)).squareRoot()
                #expect(abs(mean - ref.mean) < Double(tolerance) && abs(std - ref.std) < Double(tolerance), "mean/std of all V logits")
            }
        }
        print("\(reference.name) exact path: max |Δlogit| = \(worst) over top-20 and 256 sampled entries of every position")
        #expect(worst < tolerance)
    }

    @Test("exact path: greedy 32 tokens equal transformers' until its first near-tie (margin < 0.05)")
    func exactGreedy() async throws { try await offPool { try Self.checkExactGreedy(Self.reference) } }

    /// Greedy tokens compared before the first near-tie: at least `minimum` in all.
    static func checkExactGreedy(_ reference: LogitsReference, minimum: Int = 100) throws {
        var compared = 0
        let model = reference.model
        for prompt in reference.prompts {
            let cache = model.makeCache(capacity: prompt.ids.count + 40)
            var logits = try model.forward([SequenceInput(tokens: prompt.ids, cache: cache)], mode: .exact)[0][0]
            for (step, expected) in prompt.greedy.enumerated() {
                if prompt.margins[step] < 0.05 { break }
                let token = Sampler.argmax(logits)
                #expect(token == expected, "prompt \(prompt.ids.prefix(4))…: step \(step)")
                if token != expected { break }
                compared += 1
                logits = try model.forward([SequenceInput(tokens: [token], cache: cache)], mode: .exact)[0][0]
            }
        }
        print("\(reference.name) exact path: \(compared) greedy tokens compared")
        #expect(compared >= minimum)
    }

    @Test("fast path: top-1 equal at ≥ 98% of positions, mean |Δ| no worse than llama.cpp's",
          arguments: [false, true])
    func fastPath(stepwise: Bool) async throws { try await offPool { try Self.checkFastPath(Self.reference, stepwise: stepwise) } }

    static func checkFastPath(_ reference: LogitsReference, stepwise: Bool) throws {
        let (prompts, sampleIndices) = (reference.prompts, reference.sampleIndices)
        var agree = 0, total = 0
        var absSum = 0.0, count = 0
        for prompt in prompts {
            let ours = try reference.model.positionLogits(prompt.ids, mode: .fast, stepwise: stepwise)
            for (p, ref) in prompt.positions.enumerated() {
                total += 1
                if Sampler.argmax(ours[p]) == ref.top[0].0 { agree += 1 }
                for (j, i) in sampleIndices.enumerated() {
                    absSum += Double(abs(ours[p][i] - ref.sample[j]))
                    count += 1
                }
            }
        }
        let meanAbs = absSum / Double(count)
        let (llamacpp, llamacppAgree) = (reference.llamacppMeanAbs, reference.llamacppAgreement)
        print("\(reference.name) fast path (\(stepwise ? "decode kernel, token by token" : "prompt kernel")): top-1 \(agree)/\(total) (llama.cpp \(llamacppAgree)); mean |Δ| \(meanAbs) (llama.cpp \(llamacpp))")
        #expect(Double(agree) >= 0.98 * Double(total))
        // 256 sampled entries per position estimate the mean within ~0.02.
        #expect(meanAbs <= llamacpp + 0.03)
    }
}
