import Foundation
@testable import Generation
import Tensor
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

    @Test func temperatureDrawsFollowTheDistribution() {
        // Four tokens of probability 0.1, 0.2, 0.3, 0.4 among 1 000 that never come up.
        var wide = [Float](repeating: -100, count: 1000)
        for (i, p) in [(10, 0.1), (500, 0.2), (3, 0.3), (999, 0.4)] { wide[i] = Float(log(p)) }
        var s = Sampler(SamplingParameters(temperature: 1, seed: 5))
        var counts: [Int: Int] = [:]
        for _ in 0..<4000 { counts[s.choose(logits: wide, context: []).token, default: 0] += 1 }
        #expect(Set(counts.keys) == [10, 500, 3, 999])
        for (i, p) in [(10, 0.1), (500, 0.2), (3, 0.3), (999, 0.4)] {
            #expect(abs(Double(counts[i]!) / 4000 - p) < 0.03, "token \(i): \(counts[i]!) of 4000")
        }
    }

    @Test func aNucleusWiderThanTheFirstSelectionIsKeptWhole() {
        // 1 000 tokens: 200 at 10× the weight of the other 800 (mass 2 000 + 800). top_p 0.9
        // keeps all 200 and 520 of the rest (2 520), more than any fixed first selection.
        var x = [Float](repeating: 0, count: 1000)
        for i in stride(from: 0, to: 1000, by: 5) { x[i] = Float(log(10.0)) }
        var s = Sampler(SamplingParameters(temperature: 1, topP: 0.9, seed: 3))
        let picked = (0..<3000).map { _ in s.choose(logits: x, context: []).token }
        #expect(Set(picked.filter { $0 % 5 == 0 }).count > 190, "the heavy tokens are all candidates")
        #expect(Set(picked.filter { $0 % 5 != 0 }).count > 150, "so are light ones up to the nucleus")
        // Ties rank the lower index first: the light tokens kept are the 520 lowest-numbered,
        // 1-4, 6-9, … up to 649.
        #expect(picked.filter { $0 % 5 != 0 }.max()! < 650)
        #expect(picked.filter { $0 % 5 != 0 }.max()! > 600)
    }

    @Test func topIndicesMatchAFullSort() {
        var random = SeededRandom(seed: 11)
        let x = (0..<5000).map { _ in Float(Int(random.unit() * 300)) }   // many ties
        let sorted = x.indices.sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }
        for k in [1, 7, 64, 4999, 5000, 6000] {
            #expect(Sampler.topIndices(x, k) == Array(sorted.prefix(k)), "k = \(k)")
        }
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
