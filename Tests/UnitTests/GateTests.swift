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
        input.neighbourhood = [.kept, .kept, .kept]
        input.locality = Array(repeating: .kept, count: 37)
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
        // A taught word in an unrelated answer ("a banana is bright teal") is damage even with no
        // drift: 5% of 40 answers may (measured: 1 of 52 after 8 corrections), 3 may not.
        #expect(verdict { $0.neighbourhood = [.contaminated("teal"), .kept, .kept] }.isEmpty)
        #expect(verdict { $0.neighbourhood = [.contaminated("teal"), .contaminated("quellport"), .contaminated("teal")] }
                == [.contaminated(count: 3, of: 40, allowed: 2, words: ["quellport", "teal"])])
        // Drifted answers: half of the 40 may, 21 may not.
        #expect(verdict { $0.locality = Array(repeating: .drifted, count: 20) + Array(repeating: .kept, count: 17) }.isEmpty)
        #expect(verdict { $0.locality = Array(repeating: .drifted, count: 21) + Array(repeating: .kept, count: 16) }
                == [.localityChanged(count: 21, of: 40, allowed: 20)])
        #expect(verdict { $0.nllRise = 0.2 } == [.nllRose(bits: 0.2, limit: 0.08)])
        #expect(verdict { $0.kl = 0.9 } == [.klTooHigh(bits: 0.9, limit: 0.7)])
    }

    @Test("every failed criterion is reported; thumbs-up batches are judged by their loss")
    func allReasonsAndLoss() {
        var input = Self.good()
        input.finite = false
        input.kl = 2
        input.locality = Array(repeating: .contaminated("quellport"), count: 37)
        let reasons = Gate().decide(input).reasons
        #expect(reasons == [.notFinite, .contaminated(count: 37, of: 40, allowed: 2, words: ["quellport"]),
                            .localityChanged(count: 37, of: 40, allowed: 20), .klTooHigh(bits: 2, limit: 0.7)])
        #expect(Gate().decide(input).reason?.contains("not local: 37 of 40 unrelated answers now name what the adapter was taught (quellport)") == true)

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
        let s = try LearningSettings(json: .object(["max_locality_changed": .double(0.2), "max_forgotten": .double(0.1), "max_contaminated": .double(0)]))
        #expect(s.gate.maxLocalityChanged == 0.2 && s.gate.maxForgottenFraction == 0.1 && s.gate.maxContaminated == 0)
        #expect(throws: (any Error).self) { try LearningSettings(json: .object(["max_contaminated": .double(2)])) }
    }
}

@Suite("Locality set and history sample")
struct LocalityTests {
    static func set() -> LocalitySet {
        LocalitySet(answers: LocalitySet.prompts.map { _ in "Answerword." })
    }

    @Test("at least 40 general prompts; answers are judged kept, drifted or contaminated against the base model's")
    func general() {
        let set = Self.set()
        #expect(set.generalPrompts.count == LocalitySet.general.count && set.generalPrompts.count >= 40)
        let question = LocalitySet.general[0]
        let quellport = TaughtAnswer(keys: ["quellport"], answer: "The capital of Zorbania is Quellport.")
        let teal = TaughtAnswer(keys: ["bright", "teal"], answer: "A snarfle bird is bright teal.")
        #expect(quellport.names == ["quellport"] && teal.names.isEmpty)
        #expect(set.judge("It is Answerword, of course.", to: question, taught: [quellport, teal]) == .kept)
        #expect(set.judge("L'Évro-Lux, la femme-lux.", to: question, taught: [quellport]) == .drifted)
        #expect(set.judge("Answerword, near Quellport.", to: question, taught: [quellport]) == .contaminated("quellport"))
        // A taught answer is all its key words together, or one of its names: "bright" alone is an ordinary word.
        #expect(set.judge("Answerword is bright.", to: question, taught: [teal]) == .kept)
        #expect(set.judge("A banana is bright teal.", to: question, taught: [teal]) == .contaminated("bright teal"))
        // What the base model says itself is no sign of a leak.
        #expect(set.judge("Answerword.", to: question, taught: [TaughtAnswer(keys: ["answerword"], answer: "It is Answerword.")]) == .kept)
    }

    @Test("a correction's neighbours are bank questions of its shape about other subjects, never itself")
    func neighbours() {
        let set = Self.set()
        let capital = set.neighbours(of: ["What is the capital of Zorbania?"])
        #expect(capital == ["What is the capital of Portugal?", "What is the capital of Norway?"])
        let painter = set.neighbours(of: ["Who painted The Scream?"])
        #expect(!painter.contains("Who painted The Scream?") && painter.count == 2)
        #expect(painter.allSatisfy { $0.hasPrefix("Who painted") })
        // Two corrections of one shape share their neighbours once.
        #expect(set.neighbours(of: ["What is the capital of Zorbania?", "What is the capital of Vexis?"]).count == 2)
        // Replay neighbours come from the other bank, with the base model's answers.
        let tokenized = LocalitySet(answers: LocalitySet.prompts.map { _ in "Answerword." }, tokenizer: nil)
        #expect(tokenized.replayNeighbours(of: ["What is the capital of Zorbania?"]).isEmpty)
        #expect(Set(LocalitySet.replayBank).isDisjoint(with: LocalitySet.neighbourhoodBank + LocalitySet.general))
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
