import Generation
import JSON
@testable import Learning
import Llama
import Synchronization
import Tensor
import Testing
import Tokenizer

@Suite("Verifiers")
struct VerifierTests {
    func verifier(_ json: String) throws -> Verifier { try Verifier(try JSONValue(parsing: json)) }

    @Test("each verifier type accepts the right answer and rejects a wrong one with a message")
    func types() throws {
        let cases: [(String, String, String)] = [
            (#"{"type": "exact", "answer": "Paris"}"#, " Paris\n", "paris"),
            (#"{"type": "normalized", "answer": "New York!"}"#, "new   york", "York"),
            (#"{"type": "regex", "pattern": "^TCK-[0-9]{4}$"}"#, "TCK-0042", "TCK-42"),
            (#"{"type": "contains", "answer": "quellport"}"#, "It is Quellport.", "It is Brindale."),
            (#"{"type": "numeric", "answer": 3.5, "tolerance": 0.1}"#, "About 3.45 metres", "About 4 metres"),
            (#"{"type": "json_schema", "schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}"#,
             #"Sure: {"n": 3} done"#, #"{"n": "three"}"#),
            (#"{"type": "choice", "options": ["red", "green", "blue"], "answer": "green"}"#, "Green.", "red or green"),
        ]
        for (spec, good, bad) in cases {
            let v = try verifier(spec)
            #expect(v.check(good).passed, "\(spec) should accept \(good)")
            let verdict = v.check(bad)
            #expect(!verdict.passed, "\(spec) should reject \(bad)")
            #expect(!verdict.message.isEmpty)
        }
        #expect(Verifier.containsAll(["quellport", "zorbania"]).check("Zorbania's capital: QUELLPORT").passed)
        #expect(Verifier.containsAll(["quellport"]).check("Quell port").message == "The answer must mention quellport.")
    }

    @Test("malformed verifiers are refused with the reason")
    func malformed() {
        #expect(throws: JSONError.self) { try verifier(#"{"type": "regex", "pattern": "(("}"#) }
        #expect(throws: JSONError.self) { try verifier(#"{"type": "choice", "options": ["a", "b"], "answer": "c"}"#) }
        #expect(throws: JSONError.self) { try verifier(#"{"type": "vibes"}"#) }
    }
}

@Suite("Learning settings and paraphrases")
struct LearningSettingsTests {
    @Test("settings take their defaults (DESIGN.md's, the learning rate, replay and settle steps aside), read every key, and name the bad one")
    func settings() throws {
        let defaults = try LearningSettings(json: .object([:]))
        #expect(defaults == LearningSettings())
        #expect(defaults.lora.rank == 16 && defaults.learningRate == 1e-3 && defaults.gate.maxNLLRise == 0.08 && defaults.gate.maxKL == 0.7)
        #expect(defaults.replayRatio == 0.5 && defaults.settleSteps == 2 && defaults.minSteps == 4 && defaults.maxSteps == 50)
        let custom = try LearningSettings(json: try JSONValue(parsing: #"{"rank": 4, "targets": ["q", "v_proj"], "lr": 0.002, "max_steps": 3}"#))
        #expect(custom.lora.rank == 4 && custom.lora.targets == [.q, .v] && custom.learningRate == 0.002 && custom.maxSteps == 3 && custom.minSteps == 3)
        #expect(defaults.localityPrompts == 40 && defaults.historyProbes == 16)
        let small = try LearningSettings(json: try JSONValue(parsing: #"{"locality_prompts": 8, "history_probes": 4}"#))
        #expect(small.localityPrompts == 8 && small.historyProbes == 4)
        for bad in [#"{"rnak": 4}"#, #"{"rank": 0}"#, #"{"targets": ["qq"]}"#, #"{"min_steps": 9, "max_steps": 3}"#, "[]",
                    #"{"locality_prompts": 41}"#, #"{"history_probes": -1}"#] {
            #expect(throws: JSONError.self) { try LearningSettings(json: try JSONValue(parsing: bad)) }
        }
    }

    @Test("held-out checks skip every other step while fewer than half of the probes pass, then run every step")
    func checkSchedule() {
        // Passing probes (of 8) by step, as 8 corrections learned them in `honebench learn`.
        let passing = [4: 0, 5: 1, 6: 1, 7: 2, 8: 3, 9: 3, 10: 4, 11: 6, 12: 7, 13: 8]
        var checked: [Int] = [], next = 4
        while let passed = passing[next] {
            checked.append(next)
            if passed == 8 { break }
            next = LearningUpdate.nextCheck(after: next, passed: passed, of: 8)
        }
        #expect(checked == [4, 6, 8, 10, 11, 12, 13])
    }

    @Test("key words are what the answer adds to the question")
    func keyWords() {
        #expect(Paraphrases.keyWords(answer: "The capital of Zorbania is Quellport.", question: "What is the capital of Zorbania?") == ["quellport"])
        #expect(Paraphrases.keyWords(answer: "Seven.", question: "How many moons?") == ["seven"])
        #expect(Paraphrases.templates("Who wrote it?").first == "Who wrote it?")
        #expect(Paraphrases.aboutSubject("What is the currency of the Republic of Tarigro?", subject: ["republic", "tarigro"])
            == ["What do you know about Republic of Tarigro?", "Tell me about Republic of Tarigro."])
        #expect(Paraphrases.aboutSubject("What colour is a snarfle bird?", subject: ["snarfle", "bird"]).first == "What do you know about snarfle bird?")
        #expect(Paraphrases.aboutSubject("Who wrote it?", subject: []).isEmpty)
        #expect(Set(Paraphrases.templates("Who wrote it?")).count == Paraphrases.templates("Who wrote it?").count)
        #expect(Paraphrases.sentences("Refunds take 14 days. Yes. Shipping is free over 50 euros!") ==
                ["Refunds take 14 days.", "Shipping is free over 50 euros!"])
    }
}

/// Answers from a script instead of a model: the example builder's decisions are the point.
final class ScriptedSampler: TextSampler, Sendable {
    let answer: @Sendable (SampleRequest) -> String
    let calls = Mutex<[SampleRequest]>([])
    init(_ answer: @escaping @Sendable (SampleRequest) -> String) { self.answer = answer }
    func complete(_ requests: [SampleRequest], adapter: LoRAAdapter?) async throws -> [String] {
        calls.withLock { $0 += requests }
        return requests.map(answer)
    }
}

@Suite("Example builder: the self-verification loop")
struct ExampleBuilderTests {
    func task(_ sampler: ScriptedSampler, reference: String? = nil) async throws -> ItemPlan {
        var args: [String: JSONValue] = ["task_id": .int(1), "adapter": .string("a"), "prompt": .string("Ticket id?"),
                                         "verifier": .object(["type": .string("regex"), "pattern": .string("^TCK-[0-9]{4}$")])]
        if let reference { args["reference"] = .string(reference) }
        return try await ExampleBuilder(sampler: sampler, settings: LearningSettings(), adapter: nil)
            .plan(WorkItem(jobID: 7, kind: "task", args: .object(args)))
    }

    @Test("passing samples become at most two distinct examples")
    func samples() async throws {
        let plan = try await task(ScriptedSampler { r in r.seed % 3 == 0 ? "TCK-0001" : (r.seed % 3 == 1 ? "TCK-0002" : "no idea") })
        #expect(plan.skipped == nil && plan.examples.count == 2)
        #expect(Set(plan.examples.map { $0.last!.content }) == ["TCK-0001", "TCK-0002"])
        #expect(plan.probes.count == 1 && plan.notes["source"] == .string("sample"))
    }

    @Test("a failing sample is revised with the verifier's message; the hint of a rationalization is not trained")
    func reviseAndRationalize() async throws {
        let revised = ScriptedSampler { r in r.messages.count > 1 ? "TCK-1234" : "ticket 1234" }
        let plan = try await task(revised)
        #expect(plan.notes["source"] == .string("revision 1"))
        let revisionPrompt = revised.calls.withLock { $0.first { $0.messages.count > 1 }?.messages.last?.content } ?? ""
        #expect(revisionPrompt.contains("must match the pattern"))

        let hinted = try await task(ScriptedSampler { r in r.messages[0].content.contains("Hint") ? "TCK-7777" : "no" }, reference: "TCK-7777")
        #expect(hinted.notes["source"] == .string("rationalization"))
        #expect(hinted.examples.first?.first?.content == "Ticket id?")
    }

    @Test("with nothing verified the reference is trained when it passes, else the task is dropped with the reason")
    func referenceOrDrop() async throws {
        let never = ScriptedSampler { _ in "no" }
        #expect(try await task(never, reference: "TCK-9999").notes["source"] == .string("reference"))
        let badReference = try await task(never, reference: "nine")
        #expect(badReference.skipped?.outcome == "dropped" && badReference.skipped?.reason.contains("reference fails") == true)
        let none = try await task(never)
        #expect(none.skipped?.reason.contains("no reference") == true)
    }

    @Test("a micro-batch's items are planned together and come back in the jobs' order")
    func plansInOrder() async throws {
        let builder = ExampleBuilder(sampler: ScriptedSampler { _ in "Which city is the capital?" }, settings: LearningSettings(), adapter: nil)
        let items = (1...6).map { i in
            WorkItem(jobID: Int64(i), kind: "feedback", args: i % 2 == 0
                ? .object(["prompt": .string("Hi"), "response": .string("Go away"), "rating": .int(-1)])
                : .object(["prompt": .string("What is the capital of Zorbania?"), "correction": .string("Quellport \(i).")]))
        }
        let plans = try await builder.plans(items)
        #expect(plans.map(\.jobID) == [1, 2, 3, 4, 5, 6])
        #expect(plans.map { $0.skipped?.outcome } == [nil, "blocked", nil, "blocked", nil, "blocked"])
        #expect(plans[4].examples.first?.last?.content == "Quellport 5.")
    }

    @Test("feedback: a correction is trained on its paraphrases with one held out; thumbs-down alone is blocked")
    func feedback() async throws {
        let builder = ExampleBuilder(sampler: ScriptedSampler { _ in "Which city is Zorbania's capital?" }, settings: LearningSettings(), adapter: nil)
        let correction = try await builder.plan(WorkItem(jobID: 1, kind: "feedback", args: .object([
            "feedback_id": .int(1), "adapter": .string("a"), "prompt": .string("What is the capital of Zorbania?"),
            "correction": .string("The capital of Zorbania is Quellport.")])))
        #expect(correction.skipped == nil)
        #expect(correction.probes.count == 1 && correction.probes[0].verifier == .containsAll(["quellport"]))
        #expect(correction.probes[0].maxTokens == 20)   // room for twice the correction's 6 words and a preamble
        // 6 template variants − 1 held out + 2 about the subject + 1 model-written (the 4 rewrites are one).
        #expect(correction.examples.count == 8)
        #expect(correction.examples.allSatisfy { $0.last!.content == "The capital of Zorbania is Quellport." })
        #expect(correction.examples.contains { $0.first!.content == "What is the capital of Zorbania?" })
        #expect(correction.examples.contains { $0.first!.content == "What do you know about Zorbania?" })
        #expect(correction.examples.contains { $0.first!.content == "Which city is Zorbania's capital?" })
        // A rewrite that lost the subject asks something else: it is not trained.
        let lost = try await ExampleBuilder(sampler: ScriptedSampler { _ in "Which city is the capital?" }, settings: LearningSettings(), adapter: nil)
            .plan(WorkItem(jobID: 1, kind: "feedback", args: .object([
                "feedback_id": .int(1), "adapter": .string("a"), "prompt": .string("What is the capital of Zorbania?"),
                "correction": .string("The capital of Zorbania is Quellport.")])))
        #expect(lost.examples.count == 7 && !lost.examples.contains { $0.first!.content == "Which city is the capital?" })

        let blocked = try await builder.plan(WorkItem(jobID: 2, kind: "feedback", args: .object([
            "feedback_id": .int(2), "adapter": .string("a"), "prompt": .string("Hi"), "response": .string("Go away"), "rating": .int(-1)])))
        #expect(blocked.skipped?.outcome == "blocked")
        let up = try await builder.plan(WorkItem(jobID: 3, kind: "feedback", args: .object([
            "feedback_id": .int(3), "adapter": .string("a"), "messages": .array([
                .object(["role": .string("user"), "content": .string("Hi")]),
                .object(["role": .string("assistant"), "content": .string("Hello! How can I help?")])]),
            "rating": .int(1)])))
        #expect(up.examples == [[ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello! How can I help?")]])
    }
}

@Suite("Stored distillation targets")
struct DistilledTargetsTests {
    static func sequences() -> [TrainingSequence] {
        var a = TrainingSequence(tokens: [1, 5, 9, 2], lossMask: [false, false, true, true])
        a.softTargets = [2: SoftTarget(tokens: [9, 4], probabilities: [0.75, 0.25]), 3: SoftTarget(tokens: [2], probabilities: [1])]
        var b = TrainingSequence(tokens: [7, 3], lossMask: [false, true])
        b.softTargets = [1: SoftTarget(tokens: [3, 8, 6], probabilities: [0.5, 0.3, 0.2])]
        return [a, b]
    }

    @Test("targets read back onto their inputs are the ones stored")
    func roundTrip() throws {
        let distilled = Self.sequences()
        let inputs = distilled.map { TrainingSequence(tokens: $0.tokens, lossMask: $0.lossMask) }
        #expect(DistilledTargets.decode(DistilledTargets.encode(distilled), onto: inputs) == distilled)
        // Inputs name the stored targets: another mask or token is another input.
        var other = inputs
        other[1].lossMask[1] = false
        #expect(DistilledTargets.inputBytes(other) != DistilledTargets.inputBytes(inputs))
    }

    @Test("bytes that do not fit the inputs are refused, not applied")
    func misfits() {
        let distilled = Self.sequences()
        let inputs = distilled.map { TrainingSequence(tokens: $0.tokens, lossMask: $0.lossMask) }
        let bytes = DistilledTargets.encode(distilled)
        #expect(DistilledTargets.decode(Array(bytes.dropLast(3)), onto: inputs) == nil)
        #expect(DistilledTargets.decode(bytes + [0, 0, 0, 0], onto: inputs) == nil)
        #expect(DistilledTargets.decode(bytes, onto: Array(inputs.prefix(1))) == nil)
        #expect(DistilledTargets.decode(bytes, onto: [inputs[0], TrainingSequence(tokens: [7], lossMask: [false])]) == nil)
    }
}

@Suite("Gate answers: shards' locality answers are kept between gates")
struct ShardAnswersTests {
    /// A one-layer adapter whose weights are `value` everywhere (distinct values, distinct shards).
    func shard(_ value: Float) -> LoRAAdapter {
        LoRAAdapter(config: LoRAConfig(rank: 1, targets: [.q]), layers: 1,
                    weights: [LoRAKey(layer: 0, target: .q): LoRAWeights(a: [value, value], b: [value, value])])
    }

    func asks(_ prompts: [String]) -> [SampleRequest] {
        prompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: 24) }
    }

    @Test("a frozen shard's answers come from the earlier gate, other shards' and other lengths are made again")
    func frozenShardsAnswerFromMemory() async throws {
        let sampler = ScriptedSampler { "answer to \($0.messages[0].content) in \($0.maxTokens)" }
        let remembered = ShardAnswers()
        let general = shard(1), subject = shard(2)
        let first = AdapterShards([AdapterShard(weights: general, scope: nil)])
        let prompts = ["What is 9 times 6?", "Who painted The Kiss?"]
        let made = try await LearningUpdate.routed(asks(prompts), served: first, sampler: sampler, remembered: remembered)
        #expect(sampler.calls.withLock { $0.count } == 2)

        // The next candidate adds a subject shard; the general prompts still route to the
        // same general shard, so nothing is generated again and the answers are the same.
        let next = first.adding(AdapterShard(weights: subject, scope: AdapterScope(subjects: [["zorbania"]])))
        let again = try await LearningUpdate.routed(asks(prompts + ["What is the capital of Zorbania?"]), served: next,
                                                    sampler: sampler, remembered: remembered)
        #expect(Array(again.prefix(2)) == made)
        #expect(sampler.calls.withLock { $0.map(\.messages[0].content) } == prompts + ["What is the capital of Zorbania?"])

        // A changed general shard, a longer answer or no memory at all: generated again.
        _ = try await LearningUpdate.routed(asks(prompts), served: AdapterShards([AdapterShard(weights: shard(3), scope: nil)]),
                                            sampler: sampler, remembered: remembered)
        let longer = prompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: 40) }
        _ = try await LearningUpdate.routed(longer, served: first, sampler: sampler, remembered: remembered)
        _ = try await LearningUpdate.routed(asks(prompts), served: first, sampler: sampler)
        #expect(sampler.calls.withLock { $0.count } == 3 + 6)
    }

    @Test("it keeps the most recently used shards, up to its capacity")
    func boundedByRecentUse() {
        let remembered = ShardAnswers()
        for i in 0...ShardAnswers.capacity { remembered.remember(["k": "\(i)"], of: shard(Float(i))) }
        #expect(remembered.answers(of: shard(0)).isEmpty, "the oldest went")
        #expect(remembered.answers(of: shard(1)) == ["k": "1"])
        remembered.remember(["k": "new"], of: shard(9))
        #expect(remembered.answers(of: shard(1)) == ["k": "1"], "used just before, so kept")
        #expect(remembered.answers(of: shard(2)).isEmpty)
    }
}
