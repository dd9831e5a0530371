import Foundation
import Learning
import Llama
import Tensor
import Testing
import Tokenizer
import Training

@Suite("Learning: drift measurement on the real model", .enabled(if: RealModel.path != nil), .timeLimit(.minutes(3)))
struct DriftTests {
    static let sequences = [
        ChatExamples.sequence([ChatMessage(role: "user", content: "What is the capital of France?"),
                               ChatMessage(role: "assistant", content: "The capital of France is Paris.")], tokenizer: RealModel.tokenizer),
    ]

    @Test("an adapter whose B is zero has no drift; a perturbed one has positive KL and the NLL rise is its NLL minus the base's")
    func drift() throws {
        let model = RealModel.model
        let untrained = LoRAAdapter.initialized(config: LoRAConfig(rank: 4, alpha: 8), model: model.config, seed: 3)
        let none = try Drift.measure(model: model, sequences: Self.sequences, adapter: untrained)
        #expect(none.kl < 1e-5 && abs(none.nllRise) < 1e-5, "\(none)")
        #expect(none.baseNLL > 0)
        var perturbed = untrained
        var random = SeededRandom(seed: 5)
        for key in perturbed.keys {
            for i in perturbed.weights[key]!.b.indices { perturbed.weights[key]!.b[i] = (random.unit() * 2 - 1) * 0.05 }
        }
        let some = try Drift.measure(model: model, sequences: Self.sequences, adapter: perturbed)
        #expect(some.kl > 0.001, "\(some)")
        #expect(some.baseNLL == none.baseNLL)
        print("drift: zero-B \(none), perturbed \(some)")
    }
}
