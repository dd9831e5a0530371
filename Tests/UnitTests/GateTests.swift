import Learning
import Testing
import Tokenizer

@Suite("Gate: the decision from the checks")
struct GateTests {
    /// A batch of two items with two held-out checks each that both learned, no drift.
    static func good() -> GateInputs {
        var input = GateInputs()
        input.itemProbeCounts = [2, 2]
        input.probes = CheckPair(before: [false, false, false, true], after: [true, true, true, true])
        input.history = CheckPair(before: [true, true, false], after: [true, true, false])
        input.neighbourhood = [true, true, true]
        input.locality = Array(repeating: true, count: 40)
        input.nllRise = 0.01
        input.kl = 0.05
        return input
    }

    @Test("a candidate that learned and kept everything is accepted")
    func accepts() {
        #expect(Gate().decide(Self.good()).accepted)
        #expect(Gate().decide(Self.good()).reason == nil)
    }

    @Test("each criterion alone rejects, with its typed reason")
    func eachCriterion() {
        let gate = Gate()
        func verdict(_ change: (inout GateInputs) -> Void) -> [GateReason] {
            var input = Self.good()
            change(&input)
            return gate.decide(input).reasons
        }
        #expect(verdict { $0.finite = false } == [.notFinite])
        #expect(verdict { $0.probes.after = [true, true, true, false] }
                == [.heldOutRegressed(count: 1), .notLearned(items: 1, of: 2, neededPercent: 75)])
        #expect(verdict { $0.probes.after = [true, false, false, true] } == [.notLearned(items: 0, of: 2, neededPercent: 75)])
        #expect(verdict { $0.canaries = CheckPair(before: [true], after: [false]) } == [.canaryRegressed(count: 1)])
        // Forgetting one earlier correction it answered before.
        #expect(verdict { $0.history.after = [true, false, false] } == [.forgot(count: 1, of: 2)])
        // An earlier correction it never answered is not counted as forgotten.
        #expect(verdict { $0.history.after = [true, true, false] }.isEmpty)
        // The capital of another country changing answer is damage, even with no drift.
        #expect(verdict { $0.neighbourhood = [true, false, true] } == [.neighbourhoodChanged(count: 1, of: 3)])
        // Locality allows 10%: 4 of 40 changed passes, 5 does not.
        #expect(verdict { $0.locality = Array(repeating: false, count: 4) + Array(repeating: true, count: 36) }.isEmpty)
        #expect(verdict { $0.locality = Array(repeating: false, count: 5) + Array(repeating: true, count: 35) }
                == [.localityChanged(count: 5, of: 40, allowed: 4)])
        #expect(verdict { $0.nllRise = 0.2 } == [.nllRose(bits: 0.2, limit: 0.08)])
        #expect(verdict { $0.kl = 0.9 } == [.klTooHigh(bits: 0.9, limit: 0.7)])
    }

    @Test("every failed criterion is reported; thumbs-up batches are judged by their loss")
    func allReasonsAndLoss() {
        var input = Self.good()
        input.finite = false
        input.kl = 2
        input.neighbourhood = [false]
        let reasons = Gate().decide(input).reasons
        #expect(reasons == [.notFinite, .neighbourhoodChanged(count: 1, of: 1), .klTooHigh(bits: 2, limit: 0.7)])
        #expect(Gate().decide(input).reason?.contains("not local: 1 of 1 neighbourhood questions") == true)

        var thumbs = GateInputs()
        thumbs.itemProbeCounts = [0]
        thumbs.exampleLoss = (1.2, 0.8)
        #expect(Gate().decide(thumbs).accepted)
        thumbs.exampleLoss = (1.2, 1.3)
        #expect(Gate().decide(thumbs).reasons == [.lossDidNotFall(before: 1.2, after: 1.3)])
    }

    @Test("no improvement: checks that passed no more often than before are refused")
    func noImprovement() {
        var input = Self.good()
        input.itemProbeCounts = [1, 1, 1, 1]
        input.probes = CheckPair(before: [true, true, true, false], after: [true, true, true, false])
        #expect(Gate().decide(input).reasons == [.noImprovement(passed: 3, of: 4, before: 3)])
    }

    @Test("settings set the gate's limits and refuse shares outside 0...1")
    func settings() throws {
        let s = try LearningSettings(json: .object(["max_locality_changed": .double(0.2), "max_forgotten": .double(0.1)]))
        #expect(s.gate.maxLocalityChanged == 0.2 && s.gate.maxForgottenFraction == 0.1)
        #expect(throws: (any Error).self) { try LearningSettings(json: .object(["max_neighbourhood_changed": .double(2)])) }
    }
}

@Suite("Locality set and history sample")
struct LocalityTests {
    static func set() -> LocalitySet {
        LocalitySet(answers: LocalitySet.prompts.map { _ in "Answerword." })
    }

    @Test("at least 40 general prompts, each checked against the base model's answer")
    func general() {
        let probes = Self.set().generalProbes
        #expect(probes.count == LocalitySet.general.count && probes.count >= 40)
        #expect(probes[0].verifier.check("It is Answerword, of course.").passed)
        #expect(!probes[0].verifier.check("L'Évro-Lux, la femme-lux.").passed)
    }

    @Test("a correction's neighbours are bank questions of its shape about other subjects, never itself")
    func neighbours() {
        let set = Self.set()
        let capital = set.neighbours(of: ["What is the capital of Zorbania?"]).map { $0.messages.last!.content }
        #expect(capital == ["What is the capital of Portugal?", "What is the capital of Norway?"])
        let painter = set.neighbours(of: ["Who painted The Scream?"]).map { $0.messages.last!.content }
        #expect(!painter.contains("Who painted The Scream?") && painter.count == 2)
        #expect(painter.allSatisfy { $0.hasPrefix("Who painted") })
        // Two corrections of one shape share their neighbours once.
        #expect(set.neighbours(of: ["What is the capital of Zorbania?", "What is the capital of Vexis?"]).count == 2)
    }

    @Test("history: recent items and a spread of older ones, corrections only")
    func history() {
        func item(_ i: Int) -> [ChatMessage] {
            [ChatMessage(role: "user", content: "What is the name of item \(i)?"), ChatMessage(role: "assistant", content: "Item \(i) is called Name\(i).")]
        }
        let probes = Probe.history((0..<40).map(item))
        #expect(probes.count == 16)
        #expect(probes.last?.messages.last?.content == "What is the name of item 39?")
        #expect(probes.first?.messages.last?.content == "What is the name of item 0?")
        #expect(probes.last?.verifier.check("It is Name39.").passed == true)
        let long = [ChatMessage(role: "user", content: "Tell me a story."),
                    ChatMessage(role: "assistant", content: "Once upon a time a brave fox crossed seven rivers to find a golden apple tree.")]
        #expect(Probe.history([long]).isEmpty)
        #expect(Probe.history((0..<3).map(item)).count == 3)
    }
}
