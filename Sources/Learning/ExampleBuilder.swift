import Generation
import JSON
import Llama
import Tokenizer

/// A prompt whose answer an external verifier judges: a held-out variant of a correction,
/// a task, or an adapter's canary. The gate counts how many pass before and after training.
public struct Probe: Sendable, Equatable {
    public var messages: [ChatMessage]
    public var verifier: Verifier
    /// The most tokens the answer may take. The gate checks probes after every step once
    /// `min_steps` is reached, so a short budget where the answer is known keeps that cheap.
    public var maxTokens: Int
    /// The answer that was taught, for a correction's probe (the gate looks for it leaking
    /// into unrelated answers).
    public var taught: TaughtAnswer?

    public init(messages: [ChatMessage], verifier: Verifier, maxTokens: Int = 48, taught: TaughtAnswer? = nil) {
        self.messages = messages
        self.verifier = verifier
        self.maxTokens = maxTokens
        self.taught = taught
    }

    /// A probe whose passing answer names the key words of `answer`: room for twice its
    /// words (a word is ~1.3 tokens) and a short preamble, at most 48 tokens.
    public static func naming(_ keys: [String], of answer: String, asked: [ChatMessage]) -> Probe {
        let words = answer.split(whereSeparator: \.isWhitespace).count
        return Probe(messages: asked, verifier: .containsAll(keys), maxTokens: min(48, max(16, 2 * words + 8)),
                     taught: TaughtAnswer(keys: keys, answer: answer))
    }
}

/// What a correction taught, as the gate recognizes it elsewhere: all its key words
/// together ("bright teal"), or any of its names (words capitalized inside the answer,
/// "Quellport"), which no unrelated answer should come to say.
public struct TaughtAnswer: Sendable, Equatable {
    public var keys: [String]
    public var names: [String]
    /// The answer as taught (a forgotten correction is replayed with it).
    public var answer: String

    public init(keys: [String], answer: String) {
        self.keys = keys
        self.answer = answer
        let inside = answer.split(whereSeparator: \.isWhitespace).dropFirst()
        let capitalized = Set(inside.flatMap { Verifier.words(String($0)).isEmpty || !($0.first?.isUppercase ?? false) ? [] : Verifier.words(String($0)) })
        names = keys.filter(capitalized.contains)
    }

    /// Whether `words` (an answer's) carry this answer.
    public func appears(in words: Set<String>) -> Bool {
        !keys.isEmpty && (keys.allSatisfy(words.contains) || names.contains(where: words.contains))
    }
}

/// A claimed job, as the learner sees it.
public struct WorkItem: Sendable {
    public let jobID: Int64
    /// `feedback`, `task` or `document`.
    public let kind: String
    public let args: JSONValue
    public init(jobID: Int64, kind: String, args: JSONValue) {
        self.jobID = jobID
        self.kind = kind
        self.args = args
    }
}

/// What the self-verification loop made of one item: verified training conversations and
/// probes for the gate, or why nothing is trained (kept on the item's row).
public struct ItemPlan: Sendable {
    public let jobID: Int64
    /// Conversations ending with the assistant's target answer.
    public var examples: [[ChatMessage]] = []
    public var probes: [Probe] = []
    /// `dropped` or `blocked` with the reason, when nothing is trained.
    public var skipped: (outcome: String, reason: String)?
    /// How the examples were found (samples that passed, revision rounds, …), for the item's result.
    public var notes: [String: JSONValue] = [:]
    /// A correction's question as asked: the gate checks its neighbourhood (same shape,
    /// other subjects) keeps the base model's answers.
    public var question: String?

    init(jobID: Int64) { self.jobID = jobID }
}

/// Turns jobs into verified examples (DESIGN.md, "The learning loop"): generate, check with
/// an external verifier, revise with the verifier's message, rationalize from a reference.
/// The model's own judgement never accepts an example.
public struct ExampleBuilder: Sendable {
    let sampler: TextSampler
    let settings: LearningSettings
    /// The adapter serving now: tasks are sampled from it.
    let adapter: LoRAAdapter?

    public init(sampler: TextSampler, settings: LearningSettings, adapter: LoRAAdapter?) {
        self.sampler = sampler
        self.settings = settings
        self.adapter = adapter
    }

    /// The plans of `items`, in order. The items are worked on concurrently, so their
    /// generations share the scheduler's batches instead of waiting for each other.
    public func plans(_ items: [WorkItem]) async throws -> [ItemPlan] {
        try await withThrowingTaskGroup(of: (Int, ItemPlan).self) { group in
            for (i, item) in items.enumerated() {
                group.addTask { (i, try await plan(item)) }
            }
            var out = [ItemPlan?](repeating: nil, count: items.count)
            for try await (i, plan) in group { out[i] = plan }
            return out.map { $0! }
        }
    }

    public func plan(_ item: WorkItem) async throws -> ItemPlan {
        var plan = ItemPlan(jobID: item.jobID)
        switch item.kind {
        case "feedback": try await feedback(item.args, into: &plan)
        case "task": try await task(item.args, into: &plan)
        case "document": try await document(item.args, into: &plan)
        default: plan.skipped = ("dropped", "the learner does not handle job kind \(item.kind)")
        }
        if plan.skipped == nil && plan.examples.isEmpty {
            plan.skipped = ("dropped", "no verified example could be made")
        }
        return plan
    }

    // MARK: feedback

    func feedback(_ args: JSONValue, into plan: inout ItemPlan) async throws {
        let messages = ChatMessage.list(from: args["messages"] ?? .null)
        // The conversation up to the last user turn; the answer after it is what is judged.
        var context = messages
        var served = args["response"]?.stringValue
        if context.last?.role == "assistant" {
            served = served ?? context.last?.content
            context.removeLast()
        }
        if context.isEmpty, let prompt = args["prompt"]?.stringValue { context = [ChatMessage(role: "user", content: prompt)] }
        guard let question = context.last, question.role == "user" else {
            plan.skipped = ("dropped", args["completion_id"] != nil && messages.isEmpty
                ? "completion \(args["completion_id"]?.stringValue ?? "") was not found in hone.completions; give prompt or messages"
                : "the feedback has no user question to answer")
            return
        }
        let before = Array(context.dropLast())
        if let target = args["correction"]?.stringValue {
            try await correction(target, question: question.content, before: before, into: &plan)
        } else if args["rating"]?.intValue == 1 {
            guard let served, !served.isEmpty else {
                plan.skipped = ("dropped", "thumbs-up without the served response (completion not logged)")
                return
            }
            plan.examples = [context + [ChatMessage(role: "assistant", content: served)]]
            plan.notes["source"] = .string("thumbs-up response")
        } else {
            plan.skipped = ("blocked", "thumbs-down without a correction: the response is blocked, nothing is trained")
        }
    }

    /// The correction is the target for the question and its paraphrases; some paraphrases
    /// are held out, and pass when the answer names the correction's new words.
    func correction(_ correction: String, question: String, before: [ChatMessage], into plan: inout ItemPlan) async throws {
        let keys = Paraphrases.keyWords(answer: correction, question: question)
        plan.question = question
        var variants = Array(Paraphrases.templates(question).prefix(settings.variants))
        let subject = LocalitySet.subject(of: question)
        variants += Paraphrases.aboutSubject(question, subject: subject)
        // Model-written paraphrases join when they read as a question, do not give the answer
        // away and still name the subject (a rewrite that lost it asks something else, and
        // a subject shard would never answer it).
        let named = AdapterScope(subjects: [subject])
        let rewrites = try await sampler.complete((0..<4).map { i in
            SampleRequest(messages: [ChatMessage(role: "user", content: "Rewrite this question in different words. Reply with the new question only.\n\n\(question)")],
                          temperature: settings.temperature, seed: settings.seed &+ UInt64(i), maxTokens: 40)
        }, adapter: nil)
        var modelWritten = 0
        for rewrite in rewrites {
            let q = rewrite.trimmingCharacters(in: .whitespacesAndNewlines)
            let lower = Set(Verifier.words(q))
            guard q.hasSuffix("?"), q.count <= 200, !variants.contains(q), !keys.contains(where: lower.contains),
                  subject.isEmpty || named.covers([ChatMessage(role: "user", content: q)]) else { continue }
            variants.append(q)
            modelWritten += 1
        }
        // Held out: the last template variants (never the original question, index 0).
        let templateCount = min(settings.variants, Paraphrases.templates(question).count)
        let heldIndices = Set((1..<max(templateCount, 1)).suffix(settings.heldOut))
        for (i, variant) in variants.enumerated() {
            let asked = before + [ChatMessage(role: "user", content: variant)]
            if heldIndices.contains(i) {
                plan.probes.append(.naming(keys, of: correction, asked: asked))
            } else {
                plan.examples.append(asked + [ChatMessage(role: "assistant", content: correction)])
            }
        }
        plan.notes["variants"] = .int(variants.count)
        plan.notes["model_paraphrases"] = .int(modelWritten)
        plan.notes["held_out"] = .int(plan.probes.count)
    }

    // MARK: task

    func task(_ args: JSONValue, into plan: inout ItemPlan) async throws {
        guard let prompt = args["prompt"]?.stringValue, let spec = args["verifier"] else {
            plan.skipped = ("dropped", "the task has no prompt or verifier")
            return
        }
        let verifier: Verifier
        do { verifier = try Verifier(spec) } catch {
            plan.skipped = ("dropped", "the verifier is not usable: \(error)")
            return
        }
        let asked = [ChatMessage(role: "user", content: prompt)]
        plan.probes = [Probe(messages: asked, verifier: verifier)]
        func keep(_ outputs: [String]) -> Bool {
            var kept: [String] = []
            for o in outputs where verifier.check(o).passed && !kept.contains(o) && kept.count < 2 { kept.append(o) }
            plan.examples = kept.map { asked + [ChatMessage(role: "assistant", content: $0)] }
            return !kept.isEmpty
        }
        func sample(_ messages: [ChatMessage], round: Int) async throws -> [String] {
            try await sampler.complete((0..<settings.samples).map { i in
                SampleRequest(messages: messages, temperature: settings.temperature,
                              seed: settings.seed &+ UInt64(round * 100 + i), maxTokens: 128)
            }, adapter: adapter)
        }
        var outputs = try await sample(asked, round: 0)
        plan.notes["samples_passed"] = .int(outputs.filter { verifier.check($0).passed }.count)
        if keep(outputs) { plan.notes["source"] = .string("sample"); return }
        // Revise: show the model its answer and the verifier's message.
        for round in 1...max(settings.revisionRounds, 1) where round <= settings.revisionRounds {
            let failed = outputs.first ?? ""
            let message = verifier.check(failed).message
            outputs = try await sample(asked + [ChatMessage(role: "assistant", content: failed),
                                                ChatMessage(role: "user", content: "That answer was not accepted: \(message) Answer the original request again.")],
                                       round: round)
            if keep(outputs) { plan.notes["source"] = .string("revision \(round)"); return }
        }
        // Rationalize: the reference as a hint; the example is trained without the hint.
        if let reference = args["reference"]?.stringValue {
            outputs = try await sample([ChatMessage(role: "user", content: "\(prompt)\n\n(Hint: a correct answer is: \(reference))")], round: 9)
            if keep(outputs) { plan.notes["source"] = .string("rationalization"); return }
            if verifier.check(reference).passed {
                plan.examples = [asked + [ChatMessage(role: "assistant", content: reference)]]
                plan.notes["source"] = .string("reference")
                return
            }
            plan.skipped = ("dropped", "no sample, revision or rationalization passed the verifier, and the reference fails it too: \(verifier.check(reference).message)")
            return
        }
        plan.skipped = ("dropped", "no sample or revision passed the verifier (\(message(for: verifier, outputs))) and there is no reference")
    }

    private func message(for verifier: Verifier, _ outputs: [String]) -> String {
        outputs.first.map { verifier.check($0).message } ?? "no output"
    }

    // MARK: document

    /// Statements become question→answer pairs: the model writes a question each sentence
    /// answers (kept when it is a question that does not contain the answer); never raw text alone.
    func document(_ args: JSONValue, into plan: inout ItemPlan) async throws {
        let text = args["text"]?.stringValue ?? ""
        let sentences = Paraphrases.sentences(text).prefix(16)
        guard !sentences.isEmpty else {
            plan.skipped = ("dropped", "the document has no complete sentence to learn from")
            return
        }
        let questions = try await sampler.complete(sentences.map { s in
            SampleRequest(messages: [ChatMessage(role: "user", content: "Write one question that this sentence answers. Reply with the question only.\n\nSentence: \(s)")],
                          maxTokens: 40)
        }, adapter: nil)
        var pairs: [(String, String, [String])] = []
        for (sentence, raw) in zip(sentences, questions) {
            let q = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            let keys = Paraphrases.keyWords(answer: sentence, question: q)
            guard q.hasSuffix("?"), q.count <= 200, !keys.isEmpty else { continue }
            pairs.append((q, sentence, keys))
        }
        for (i, (q, sentence, keys)) in pairs.enumerated() {
            let asked = [ChatMessage(role: "user", content: q)]
            if pairs.count > 2 && i == pairs.count - 1 {
                plan.probes.append(.naming(keys, of: sentence, asked: asked))
            } else {
                plan.examples.append(asked + [ChatMessage(role: "assistant", content: sentence)])
            }
        }
        plan.notes["sentences"] = .int(sentences.count)
        plan.notes["pairs"] = .int(pairs.count)
        if pairs.isEmpty { plan.skipped = ("dropped", "no question-answer pair could be extracted from the document") }
    }
}

extension ChatMessage {
    /// Messages from a JSON array of `{"role", "content"}` objects (job payloads, the
    /// replay buffer); entries without both strings are skipped.
    public static func list(from json: JSONValue) -> [ChatMessage] {
        (json.arrayValue ?? []).compactMap { m in
            guard let role = m["role"]?.stringValue, let content = m["content"]?.stringValue else { return nil }
            return ChatMessage(role: role, content: content)
        }
    }

    /// The JSON array form of `messages`, as `list(from:)` reads it.
    public static func json(_ messages: [ChatMessage]) -> JSONValue {
        .array(messages.map { .object(["role": .string($0.role), "content": .string($0.content)]) })
    }
}
