import Foundation

/// Template paraphrases of a question, the words that make an answer, and sentence
/// splitting: the deterministic half of turning a correction or document into examples.
public enum Paraphrases {
    /// The question first, then rewordings that keep its meaning. Templates only change
    /// the framing, so the answer stays right for all of them.
    public static func templates(_ question: String) -> [String] {
        let q = question.trimmingCharacters(in: .whitespacesAndNewlines)
        let bare = q.hasSuffix("?") ? String(q.dropLast()) : q
        let lowered = bare.prefix(1).lowercased() + bare.dropFirst()
        return [
            q,
            "Quick question: \(bare)?",
            "\(bare)? Please answer in one sentence.",
            "Tell me: \(lowered)?",
            "I'd like to know: \(lowered)?",
            "Answer briefly. \(bare)?",
            "Do you know this? \(bare)?",
            "Here is a question for you. \(bare)?",
        ]
    }

    /// Questions about the subject of `question` as a whole ("What do you know about the
    /// lovilphone?"), so the fact is tied to the name that routes to it rather than to one
    /// way of asking: reworded questions share the name, not the wording. Empty when the
    /// question does not hold `subject` (its words, as `LocalitySet.subject(of:)` gives them).
    public static func aboutSubject(_ question: String, subject: [String]) -> [String] {
        guard let phrase = span(of: subject, in: question) else { return [] }
        return ["What do you know about \(phrase)?", "Tell me about \(phrase)."]
    }

    /// The stretch of `text` from the first to the last of `words` (lowercased), as written:
    /// "Republic of Tarigro" for `[republic, tarigro]`.
    static func span(of words: [String], in text: String) -> String? {
        let wanted = Set(words)
        var first: String.Index?, last: String.Index?
        var index = text.startIndex
        while index < text.endIndex {
            guard text[index].isLetter || text[index].isNumber else { index = text.index(after: index); continue }
            var end = index
            while end < text.endIndex, text[end].isLetter || text[end].isNumber { end = text.index(after: end) }
            if wanted.contains(text[index..<end].lowercased()) {
                first = first ?? index
                last = end
            }
            index = end
        }
        guard let first, let last else { return nil }
        return String(text[first..<last])
    }

    /// Words of `answer` that the question does not already contain (and are not filler):
    /// what an answer must say to carry the fact. Falls back to all content words.
    public static func keyWords(answer: String, question: String) -> [String] {
        let asked = Set(Verifier.words(question))
        var seen = Set<String>()
        let content = Verifier.words(answer).filter { !stopWords.contains($0) && seen.insert($0).inserted }
        let new = content.filter { !asked.contains($0) }
        return new.isEmpty ? content : new
    }

    /// Sentences of `text` that end with . ! or ? and have at least four words.
    public static func sentences(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""
        for c in text {
            current.append(c)
            if c == "." || c == "!" || c == "?" {
                let s = current.trimmingCharacters(in: .whitespacesAndNewlines)
                if Verifier.words(s).count >= 4 { out.append(s) }
                current = ""
            }
        }
        return out
    }

    static let stopWords: Set<String> = [
        "a", "an", "the", "is", "are", "was", "were", "be", "been", "of", "in", "on", "at", "to", "for", "and", "or",
        "it", "its", "this", "that", "with", "as", "by", "from", "has", "have", "had", "which", "who", "what",
        "i", "you", "he", "she", "we", "they", "my", "your", "his", "her", "our", "their", "do", "does", "did",
        "not", "no", "yes", "so", "but", "if", "then", "there", "here", "also", "very", "called", "named",
    ]
}
