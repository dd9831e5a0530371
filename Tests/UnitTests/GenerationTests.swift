import Foundation
import Generation
import Testing

@Suite("Sampling and stop rules")
struct GenerationTests {
    let logits: [Float] = [0.1, 2.0, 1.9, -1, 0.5, 3.0, 2.9, 0]

    @Test func greedyPicksTheMaximum() {
        var s = Sampler(SamplingParameters(temperature: 0))
        #expect(s.choose(logits: logits, context: []).token == 5)
    }

    @Test func seedReproducesSamples() {
        func run(_ seed: UInt64) -> [Int] {
            var s = Sampler(SamplingParameters(temperature: 1, seed: seed))
            return (0..<50).map { _ in s.choose(logits: logits, context: []).token }
        }
        #expect(run(42) == run(42))
        #expect(run(42) != run(43))
        #expect(Set(run(7)).count > 2, "temperature 1 explores")
    }

    @Test func topKAndTopPRestrictTheCandidates() {
        var k2 = Sampler(SamplingParameters(temperature: 5, topK: 2, seed: 1))
        let picked = Set((0..<200).map { _ in k2.choose(logits: logits, context: []).token })
        #expect(picked == [5, 6])
        var p = Sampler(SamplingParameters(temperature: 1, topP: 0.3, seed: 1))
        #expect(Set((0..<200).map { _ in p.choose(logits: logits, context: []).token }) == [5])
    }

    @Test func repetitionPenaltyDiscouragesSeenTokens() {
        var s = Sampler(SamplingParameters(temperature: 0, repetitionPenalty: 2))
        #expect(s.choose(logits: logits, context: [5]).token == 6)
        #expect(s.choose(logits: logits, context: [5, 6]).token == 1)
    }

    @Test func logprobsAreNormalized() {
        var s = Sampler(SamplingParameters(temperature: 0))
        let choice = s.choose(logits: logits, context: [], topLogprobs: 3)
        #expect(choice.top.map(\.token) == [5, 6, 1])
        #expect(abs(choice.top[0].logprob - choice.logprob) < 1e-6)
        let total = logits.reduce(Float(0)) { $0 + expf($1 - logits.max()!) }
        #expect(abs(choice.logprob - (logits[5] - logits.max()! - logf(total))) < 1e-5)
    }

    @Test func stopStringsCutAndHoldBack() {
        var m = StopMatcher(stops: ["###", "END"])
        #expect(m.feed("Hello ") == ("Hello ", false))
        #expect(m.feed("wor#") == ("wor", false), "a possible start of ### is held back")
        #expect(m.feed("#x") == ("##x", false), "not a stop after all")
        #expect(m.feed(" E") == (" ", false))
        #expect(m.feed("ND more") == ("", true))
        var n = StopMatcher(stops: ["stop"])
        #expect(n.feed("no st") == ("no ", false))
        #expect(n.finish("") == "st", "held text is released at the end")
    }
}
