import Foundation
import Generation
import Llama
import Testing
import Tokenizer

@Suite("Real model: fast path against the exact path", .enabled(if: RealModel.path != nil))
struct FastPathTests {
    @Test func fastPathTracksExactPath() throws {
        let text = ChatTemplate(template: RealModel.tokenizer.chatTemplate)
            .render([ChatMessage(role: "user", content: "What is the capital of France?")])
        let tokens = RealModel.tokenizer.encode(text)
        let exact = try RealModel.logits(tokens, mode: .exact)
        let fast = try RealModel.logits(tokens, mode: .fast)
        var agree = 0
        var meanAbs: Double = 0
        for (e, f) in zip(exact, fast) {
            if Sampler.argmax(e) == Sampler.argmax(f) { agree += 1 }
            meanAbs += zip(e, f).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(e.count)
            print("pos top1 exact \(Sampler.argmax(e)) fast \(Sampler.argmax(f)) maxdiff \(zip(e, f).map { abs($0 - $1) }.max()!)")
        }
        meanAbs /= Double(exact.count)
        print("agree \(agree)/\(exact.count) meanAbs \(meanAbs)")
        #expect(Double(agree) >= 0.98 * Double(exact.count))
    }
}
