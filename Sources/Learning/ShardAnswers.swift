import Generation
import Llama
import Synchronization

/// Greedy answers that frozen shards gave to the gate's locality prompts, kept between
/// updates. A shard never changes once accepted, and greedy decoding gives a prompt the
/// same answer whatever else shares its batch, so a later gate that routes the prompt to
/// the same weights would only recompute these strings. In the daemon the general prompts
/// of an adapter with a general shard were ~10 of a no-load update's ~14 s of gate (`ops/bench
/// freshness`, session 20): every update generated them again with a shard that had not moved.
public final class ShardAnswers: Sendable {
    /// Shards remembered, the most recently used last: an adapter's general shard and the
    /// candidates of its last few updates.
    public static let capacity = 4
    private let entries = Mutex<[(weights: LoRAAdapter, answers: [String: String])]>([])

    public init() {}

    /// The answers remembered for `weights`, by request key (empty when none).
    func answers(of weights: LoRAAdapter) -> [String: String] {
        entries.withLock { entries in
            guard let i = entries.firstIndex(where: { $0.weights == weights }) else { return [:] }
            let entry = entries.remove(at: i)
            entries.append(entry)
            return entry.answers
        }
    }

    /// Remembers `answers` (by request key: answer length, role and text) of `weights`, beside those it has.
    func remember(_ answers: [String: String], of weights: LoRAAdapter) {
        guard !answers.isEmpty else { return }
        entries.withLock { entries in
            var merged = answers
            if let i = entries.firstIndex(where: { $0.weights == weights }) {
                merged.merge(entries.remove(at: i).answers) { new, _ in new }
            }
            entries.append((weights, merged))
            if entries.count > Self.capacity { entries.removeFirst(entries.count - Self.capacity) }
        }
    }
}
