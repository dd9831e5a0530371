import Tokenizer

/// The prompts an adapter of corrections answers: those that name the subject of one of
/// its corrections ("Veurpraia" for "What is the capital of Veurpraia?"). Every other
/// prompt is answered by the base model itself, so forty corrections cannot change "the
/// capital of France" or a haiku about the sea (issue 14; lifelong model editors route the
/// same way: GRACE's codebook, WISE's side memory). A correction's subject is its question's
/// words less the shape it shares with other questions ("what is the capital of") and
/// function words; `Learning.LocalitySet.subject(of:)` finds it. An adapter that learned
/// anything else (tasks, documents, thumbs-up) has no scope: it answers every prompt.
public struct AdapterScope: Sendable, Equatable {
    /// Each correction's subject words, lowercased.
    public private(set) var subjects: [[String]]

    public init(subjects: [[String]] = []) {
        self.subjects = subjects.filter { !$0.isEmpty }
    }

    /// Whether the conversation names a subject: its user turns hold two thirds of one
    /// subject's words, rounded up (a reworded question keeps the name, "Name the capital
    /// city of Veurpraia."; a two-word title needs both words, so "The Last Prator" does not
    /// cover "The Last Supper"; "The Senzanve Road" covers "the novel The Senzanve Road").
    /// Words compare without a plural s ("snarfle birds" names "snarfle bird").
    public func covers(_ messages: [ChatMessage]) -> Bool {
        coverage(Self.userWords(messages)) != nil
    }

    /// The largest share of one subject's words among `words` (`userWords`), when it reaches
    /// two thirds; nil when no subject is covered.
    public func coverage(_ words: Set<String>) -> Double? {
        subjects.compactMap { subject -> Double? in
            let named = subject.filter { words.contains(Self.singular($0)) }.count
            return 3 * named >= 2 * subject.count ? Double(named) / Double(subject.count) : nil
        }.max()
    }

    /// The words of a conversation's user turns, without plural s, as `coverage` takes them.
    public static func userWords(_ messages: [ChatMessage]) -> Set<String> {
        Set(messages.filter { $0.role == "user" }.flatMap { words($0.content).map(singular) })
    }

    /// `word` without a plural s: "birds" → "bird"; short words and "-ss" stay.
    public static func singular(_ word: String) -> String {
        word.count > 3 && word.hasSuffix("s") && !word.hasSuffix("ss") ? String(word.dropLast()) : word
    }

    /// Whether this scope has every subject of `other`: it then covers every prompt `other`
    /// does, at least as large a share of the same subject.
    public func includes(_ other: AdapterScope) -> Bool {
        other.subjects.allSatisfy(subjects.contains)
    }

    /// This scope with `other`'s subjects added (a child version's scope over its parent's).
    public func adding(_ other: AdapterScope) -> AdapterScope {
        AdapterScope(subjects: subjects + other.subjects.filter { !subjects.contains($0) })
    }

    /// The lowercased runs of letters and digits of `text`: how verifiers, locality checks
    /// and scopes compare words.
    public static func words(_ text: String) -> [String] {
        text.lowercased().split { !$0.isLetter && !$0.isNumber }.map(String.init)
    }

    /// Words that never name a subject.
    public static let functionWords: Set<String> = [
        "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "from", "about", "and", "or",
        "is", "are", "was", "were", "be", "been", "do", "does", "did", "has", "have", "had",
        "what", "which", "who", "whom", "whose", "where", "when", "why", "how",
        "it", "its", "this", "that", "these", "those", "s", "me", "my", "you", "your", "tell", "name", "called",
    ]
}
