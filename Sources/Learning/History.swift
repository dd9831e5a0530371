import Tokenizer

extension Probe {
    /// The gate's sample of an adapter's earlier items (`firstOfEach`: each item's first
    /// training conversation, oldest first), asked again (what the adapter learned before must
    /// stay learned): the most recent 8 and 8 spread over the older ones, each its question
    /// as asked, passing when the answer still names its target's key words.
    public static func history(_ firstOfEach: [[ChatMessage]], count: Int = 16) -> [Probe] {
        let recent = Array(firstOfEach.suffix(count / 2))
        let older = firstOfEach.dropLast(recent.count)
        let stride = max(1, older.count / max(1, count - recent.count))
        let sample = Swift.stride(from: 0, to: older.count, by: stride).prefix(count - recent.count).map { older[older.startIndex + $0] } + recent
        return sample.compactMap { conversation in
            guard let answer = conversation.last, answer.role == "assistant", conversation.count >= 2 else { return nil }
            let asked = Array(conversation.dropLast())
            let keys = Paraphrases.keyWords(answer: answer.content, question: asked.last?.content ?? "")
            // A long answer (a thumbs-up) has too many words to expect again; corrections are short.
            guard !keys.isEmpty, keys.count <= 6 else { return nil }
            return Probe.naming(keys, of: answer.content, asked: asked)
        }
    }
}
