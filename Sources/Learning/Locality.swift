import Foundation
import Tokenizer

/// What a candidate must leave as the base model had it (DESIGN.md, "Gate", local): a
/// general set of prompts, and for each correction its neighbourhood — real questions of
/// the same shape about other subjects. Average drift misses this damage: 40 corrections of
/// fictional facts once turned "the capital of France" into nonsense at a drift the gate
/// allowed. Expected answers are the base model's own, made once per base model.
public struct LocalitySet: Sendable {
    /// Real questions in the shapes corrections take (capitals, painters, authors, rivers,
    /// languages, inventors, …), several per shape; a correction's neighbours come from here.
    public static let neighbourhoodBank = [
        "What is the capital of Germany?", "What is the capital of Italy?", "What is the capital of Spain?",
        "What is the capital of Canada?", "What is the capital of Egypt?", "What is the capital of Australia?",
        "Who painted the Mona Lisa?", "Who painted The Starry Night?", "Who painted the ceiling of the Sistine Chapel?",
        "Who wrote Hamlet?", "Who wrote Pride and Prejudice?", "Who wrote The Odyssey?",
        "Which river flows through Paris?", "Which river flows through London?", "Which river flows through Cairo?",
        "What language is spoken in Germany?", "What language is spoken in Mexico?", "What language is spoken in Italy?",
        "Who was the first person to walk on the Moon?", "Who was the first president of the United States?",
        "Who invented the telephone?", "Who invented the light bulb?", "Who discovered penicillin?",
        "What is the currency of Japan?", "What is the currency of the United Kingdom?", "What is the currency of the United States?",
        "What is the largest country in the world?", "What is the longest river in the world?", "What is the highest mountain in the world?",
        "How many planets are in our solar system?", "How many hours are in a day?", "How many sides does a triangle have?",
        "What colour is a banana?", "What colour is the sky on a clear day?", "What colour are emeralds?",
        "Which planet is known as the Red Planet?", "Which planet is closest to the Sun?", "Which animal is known as the king of the jungle?",
        "What is the chemical symbol for water?", "What is the chemical symbol for iron?", "What gas do plants take in?",
        "In which country are the pyramids of Giza?", "In which city is the Eiffel Tower?", "In which country is the Great Wall?",
        "What year did World War II end?", "What is the speed of light?", "What is the smallest prime number?",
        "Who is the author of Harry Potter?", "Who composed the Fifth Symphony?", "Who developed the theory of relativity?",
    ]

    /// General prompts of every kind (facts, instructions, writing, arithmetic); none is
    /// trained on, so a changed answer is damage the update did.
    public static let general = [
        "What is the capital of France?", "Which river flows through Rome?", "Who painted The Last Supper?",
        "Write a haiku about the sea.", "What is 9 times 6?", "Name three colours of the rainbow.",
        "What is the capital of China?", "Who wrote Don Quixote?", "What do cows drink?",
        "Give one synonym for happy.", "What is the plural of mouse?", "How many minutes are in an hour?",
        "What is the first letter of the English alphabet?", "Which season comes after winter?", "What is ice made of?",
        "Name a musical instrument with strings.", "What is the capital of Russia?", "Who was Albert Einstein?",
        "What does a baker do?", "Which animal says moo?", "What is the opposite of up?",
        "Write a sentence about a dog.", "What is 100 divided by 4?", "Which is heavier, a kilogram of iron or a kilogram of feathers?",
        "What is the main language of Argentina?", "Where do penguins live?", "What is the capital of India?",
        "Who painted Guernica?", "What is the largest desert in the world?", "What is H2O?",
        "Name a vegetable that is orange.", "What shape has four equal sides?", "What is the capital of Greece?",
        "Who wrote The Divine Comedy?", "What is the currency of the Eurozone?", "How many weeks are in a year?",
        "What does the heart pump?", "Which bird is a symbol of peace?", "Write a short poem about the moon.",
        "What is the capital of Brazil?",
    ]

    /// Answer tokens of a locality check: enough for the answer's first words.
    public static let maxTokens = 24
    /// Key words of the base answer that a kept answer must still contain.
    static let keyCount = 3

    /// The base model's checks by question.
    let probes: [String: Probe]

    /// Every prompt whose base answer the set needs, in a fixed order.
    public static var prompts: [String] { neighbourhoodBank + general.filter { !neighbourhoodBank.contains($0) } }

    /// The set for the base model's greedy `answers` to `prompts` (one each, in order).
    public init(answers: [String]) {
        precondition(answers.count == Self.prompts.count, "one answer per locality prompt")
        var probes: [String: Probe] = [:]
        for (question, answer) in zip(Self.prompts, answers) {
            let keys = Array(Paraphrases.keyWords(answer: answer, question: question).prefix(Self.keyCount))
            // An empty base answer says nothing to keep.
            guard !keys.isEmpty else { continue }
            probes[question] = Probe(messages: [ChatMessage(role: "user", content: question)], verifier: .containsAll(keys),
                                     maxTokens: Self.maxTokens)
        }
        self.probes = probes
    }

    /// The base model's greedy answers to `prompts`, in order.
    public static func answers(sampler: TextSampler) async throws -> [String] {
        try await sampler.complete(prompts.map { SampleRequest(messages: [ChatMessage(role: "user", content: $0)], maxTokens: maxTokens) },
                                   adapter: nil)
    }

    /// The general checks, in order.
    public var generalProbes: [Probe] { Self.general.compactMap { probes[$0] } }

    /// Neighbours of `questions` (each a correction's question): for each, the `count` bank
    /// questions that share most of its words (its shape: "what is the capital of"),
    /// never the question itself; each neighbour once.
    public func neighbours(of questions: [String], count: Int = 2) -> [Probe] {
        var chosen: [String] = []
        for question in questions {
            let words = Set(Verifier.words(question))
            let scored = Self.neighbourhoodBank.enumerated().compactMap { i, candidate -> (Double, Int, String)? in
                let other = Set(Verifier.words(candidate))
                guard other != words, probes[candidate] != nil else { return nil }
                let shared = Double(words.intersection(other).count)
                return shared > 0 ? (shared / Double(words.union(other).count), i, candidate) : nil
            }
            // Most similar first; ties in bank order, so the choice is deterministic.
            let best = scored.sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }.prefix(count).map(\.2)
            for b in best where !chosen.contains(b) { chosen.append(b) }
        }
        return chosen.compactMap { probes[$0] }
    }
}
