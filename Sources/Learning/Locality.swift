import Foundation
import Llama
import Tokenizer
import Training

/// What a candidate must leave as the base model had it (DESIGN.md, "Gate", local): a
/// general set of prompts, and for each correction its neighbourhood — real questions of
/// the same shape about other subjects. Average drift misses this damage: 40 corrections of
/// fictional facts once turned "the capital of France" into nonsense at a drift the gate
/// allowed. Expected answers are the base model's own, made once per base model.
public struct LocalitySet: DistilledSet, Sendable {
    /// Real questions in the shapes corrections take (capitals, painters, authors, rivers,
    /// languages, inventors, …), several per shape; a correction's neighbours come from here.
    public static let neighbourhoodBank = [
        "What is the capital of Portugal?", "What is the capital of Norway?", "What is the capital of Kenya?",
        "What is the capital of Peru?", "What is the capital of Thailand?", "What is the capital of Poland?",
        "Who painted The Night Watch?", "Who painted The Birth of Venus?", "Who painted The Scream?",
        "Who wrote Moby-Dick?", "Who wrote The Odyssey?", "Who wrote Jane Eyre?",
        "Which river flows through Budapest?", "Which river flows through Baghdad?", "Which river flows through New Orleans?",
        "What language is spoken in Italy?", "What language is spoken in China?", "What language is spoken in Russia?",
        "Who was the first person to climb Mount Everest?", "Who was the first woman to win a Nobel Prize?",
        "Who invented the steam engine?", "Who invented the radio?", "Who discovered gravity?",
        "What is the currency of Mexico?", "What is the currency of Switzerland?", "What is the currency of China?",
        "What is the longest river in the world?", "What is the largest country in the world?", "What is the highest mountain in the world?",
        "How many planets are in our solar system?", "How many sides does a triangle have?", "How many strings does a violin have?",
        "What colour is a banana?", "What colour are emeralds?", "What colour is the sky on a clear day?",
        "Which planet is closest to the Sun?", "Which planet has the most famous rings?", "Which animal is known as the king of the jungle?",
        "What is the chemical symbol for sodium?", "What is the chemical symbol for oxygen?", "What gas do plants take in?",
        "In which city is the Colosseum?", "In which country are the pyramids of Giza?", "In which country is the Great Wall?",
        "Who founded Google?", "Who founded Facebook?", "What year did World War II end?", "What is the smallest prime number?",
        "Who is the author of Harry Potter?", "Who composed the Fifth Symphony?", "Who developed the theory of relativity?",
    ]

    /// General prompts of every kind (facts, instructions, writing, arithmetic). None of
    /// these, nor of the bank, is among `ops/bench lifelong`'s prompts, which judge the
    /// daemon with questions its gate never sees.
    public static let general = [
        "What is the capital of Sweden?", "Which river flows through Rome?", "Who painted The Kiss?",
        "Write a haiku about the mountains.", "What is 9 times 6?", "Name three colours of the rainbow.",
        "What is the capital of China?", "Who wrote Don Quixote?", "What do cows drink?",
        "Give one synonym for happy.", "What is the plural of mouse?", "How many minutes are in an hour?",
        "What is the first letter of the English alphabet?", "Which season comes after winter?", "What is ice made of?",
        "Name a musical instrument with strings.", "What is the capital of Argentina?", "Who was Albert Einstein?",
        "What does a baker do?", "Which animal says moo?", "What is the opposite of up?",
        "Write a sentence about a dog.", "What is 100 divided by 4?", "Which is heavier, a kilogram of iron or a kilogram of feathers?",
        "What is the main language of Argentina?", "Where do penguins live?", "What is the capital of India?",
        "Who painted The Persistence of Memory?", "What is the largest desert in the world?", "What is H2O?",
        "Name a vegetable that is orange.", "What shape has four equal sides?", "What is the capital of Greece?",
        "Who wrote The Divine Comedy?", "What is the currency of the Eurozone?", "How many weeks are in a year?",
        "What does the heart pump?", "Which bird is a symbol of peace?", "Write a short poem about the moon.",
        "What is the capital of Brazil?",
    ]

    /// Real questions of the same shapes, replayed in training with the base model's answers
    /// (distilled) beside a correction of their shape, so the update learns that only the
    /// corrected subject changes. Disjoint from the bank the gate checks, which judges with
    /// questions training never saw.
    public static let replayBank = [
        "What is the capital of Finland?", "What is the capital of Chile?", "What is the capital of Ireland?",
        "What is the capital of Vietnam?", "What is the capital of Nigeria?", "What is the capital of Austria?",
        "Who painted Water Lilies?", "Who painted The Girl with a Pearl Earring?", "Who painted The Creation of Adam?",
        "Who wrote Macbeth?", "Who wrote The Old Man and the Sea?", "Who wrote Frankenstein?",
        "Which river flows through Berlin?", "Which river flows through Prague?", "Which river flows through Shanghai?",
        "What language is spoken in Greece?", "What language is spoken in Korea?", "What language is spoken in Argentina?",
        "Who was the first person to fly across the Atlantic alone?", "Who was the first person in space?",
        "Who invented the telescope?", "Who invented the computer?", "Who discovered electricity?",
        "What is the currency of Russia?", "What is the currency of Brazil?", "What is the currency of Canada?",
        "What is the largest ocean in the world?", "What is the biggest city in the world?", "What is the deepest lake in the world?",
        "How many players are on a football team?", "How many legs does a horse have?", "How many letters are in the English alphabet?",
        "What colour is a ripe tomato?", "What colour are polar bears?", "What colour is chocolate?",
        "Which planet is the largest?", "Which planet is farthest from the Sun?", "Which animal is the fastest on land?",
        "What is the chemical symbol for carbon?", "What is the chemical symbol for hydrogen?", "What gas do humans breathe out?",
        "In which city is Big Ben?", "In which country is Machu Picchu?", "In which country is the Taj Mahal?",
        "Who founded Toyota?", "Who founded the Red Cross?", "What year did the Titanic sink?", "What is the largest even prime number?",
        "Who is the author of The Hobbit?", "Who composed The Four Seasons?", "Who developed the polio vaccine?",
    ]

    /// Answer tokens of a locality check: enough for the answer's first sentence.
    public static let maxTokens = 24
    /// Key words of the base answer's first sentence that a kept answer must mostly name.
    static let keyCount = 4

    /// Key words of the base model's answer (its first sentence), by question.
    let keys: [String: [String]]
    /// The base model's answers, by question.
    public let baseAnswers: [String: String]
    /// The replay bank as training sequences with the base model's answers, by question;
    /// after `distill(model:stored:)` their targets are its whole distributions.
    var replay: [String: TrainingSequence] = [:]

    /// Every prompt whose base answer the set needs, in a fixed order.
    public static var prompts: [String] { neighbourhoodBank + general + replayBank }

    /// The set for the base model's greedy `answers` to `prompts` (one each, in order);
    /// `tokenizer` makes the replay sequences (none without one).
    public init(answers: [String], tokenizer: Tokenizer? = nil) {
        precondition(answers.count == Self.prompts.count, "one answer per locality prompt")
        var keys: [String: [String]] = [:]
        let replayQuestions = Set(Self.replayBank)
        for (question, answer) in zip(Self.prompts, answers) {
            if replayQuestions.contains(question) {
                if let tokenizer, !answer.isEmpty {
                    replay[question] = ChatExamples.sequence([ChatMessage(role: "user", content: question),
                                                              ChatMessage(role: "assistant", content: answer)], tokenizer: tokenizer)
                }
                continue
            }
            let first = Paraphrases.sentences(answer).first ?? answer
            let words = Array(Paraphrases.keyWords(answer: first, question: question).prefix(Self.keyCount))
            // An empty base answer says nothing to keep.
            if !words.isEmpty { keys[question] = words }
        }
        self.keys = keys
        baseAnswers = Dictionary(zip(Self.prompts, answers), uniquingKeysWith: { first, _ in first })
    }

    /// The base model's greedy answers to `prompts`, in order.
    public static func answers(sampler: TextSampler) async throws -> [String] {
        try await sampler.complete(prompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: maxTokens) },
                                   adapter: nil)
    }

    /// The replay sequences, by question: `distill` gives them the base model's whole distributions.
    public var distillationInputs: [TrainingSequence] { replay.keys.sorted().map { replay[$0]! } }

    public mutating func setDistilled(_ sequences: [TrainingSequence]) {
        let questions = replay.keys.sorted()
        precondition(sequences.map(\.tokens) == questions.map { replay[$0]!.tokens }, "distilled sequences of another set")
        replay = Dictionary(uniqueKeysWithValues: zip(questions, sequences))
    }

    /// Replay for corrections of `questions`: for each, the `count` replay-bank questions of
    /// its shape, with the base model's answers.
    public func replayNeighbours(of questions: [String], count: Int = 2) -> [TrainingSequence] {
        Self.nearest(questions, in: Self.replayBank, count: count) { replay[$0] != nil }.compactMap { replay[$0] }
    }

    /// The general prompts that have a base answer to keep, in order.
    public var generalPrompts: [String] { Self.general.filter { keys[$0] != nil } }

    /// Judges `answer` to `question` (a general or neighbourhood prompt) against the base
    /// model's: contaminated when it carries one of the adapter's `taught` answers that the
    /// base's own answer does not, kept when it names at least half the key words of the
    /// base answer's first sentence, else drifted.
    public func judge(_ answer: String, to question: String, taught: [TaughtAnswer]) -> LocalityResult {
        let words = Set(Verifier.words(answer)), base = Set(baseAnswers[question].map(Verifier.words) ?? [])
        if let leak = taught.first(where: { $0.appears(in: words) && !$0.appears(in: base) }) {
            return .contaminated(leak.keys.joined(separator: " "))
        }
        guard let expected = keys[question] else { return .kept }
        return 2 * expected.filter(words.contains).count >= expected.count ? .kept : .drifted
    }

    /// Neighbours of `questions` (each a correction's question): for each, the `count` bank
    /// questions that share most of its words (its shape: "what is the capital of"),
    /// never the question itself; each neighbour once.
    public func neighbours(of questions: [String], count: Int = 2) -> [String] {
        Self.nearest(questions, in: Self.neighbourhoodBank, count: count) { keys[$0] != nil }
    }

    /// For each of `questions`, the `count` questions of `bank` (among those `usable`) that
    /// share most of its words, never the question itself; each once.
    static func nearest(_ questions: [String], in bank: [String], count: Int, usable: (String) -> Bool) -> [String] {
        var chosen: [String] = []
        for question in questions {
            let words = Set(Verifier.words(question))
            let scored = bank.enumerated().compactMap { i, candidate -> (Double, Int, String)? in
                let other = Set(Verifier.words(candidate))
                guard other != words, usable(candidate) else { return nil }
                let shared = Double(words.intersection(other).count)
                return shared > 0 ? (shared / Double(words.union(other).count), i, candidate) : nil
            }
            // Most similar first; ties in bank order, so the choice is deterministic.
            let best = scored.sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }.prefix(count).map(\.2)
            for b in best where !chosen.contains(b) { chosen.append(b) }
        }
        return chosen
    }
}
