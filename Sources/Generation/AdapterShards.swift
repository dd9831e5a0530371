import Llama
import Tokenizer

/// One piece of an adapter's weights and the prompts it answers.
public struct AdapterShard: Sendable, Equatable {
    public let weights: LoRAAdapter
    /// The prompts this shard answers; nil for the adapter's general shard, which answers
    /// every prompt that no subject shard covers.
    public let scope: AdapterScope?

    /// `weights` are kept prepared for inference (`LoRAAdapter.preparedForInference()`).
    public init(weights: LoRAAdapter, scope: AdapterScope?) {
        self.weights = weights.preparedForInference()
        self.scope = scope
    }
}

/// An adapter's weights as served: one shard per accepted batch of corrections, frozen once
/// accepted and answering only prompts that name one of its subjects, and at most one
/// general shard (what the adapter learned from tasks, documents and thumbs-ups) for every
/// other prompt; with neither, the base model answers. A later batch trains a shard of its
/// own instead of moving the weights that hold earlier facts, so it cannot wear them down
/// (issue 14: one continually trained adapter kept 63% of its first batch after four more;
/// WISE keeps edits in routed side-memory shards for the same reason).
public struct AdapterShards: Sendable, Equatable {
    /// Oldest first.
    public private(set) var shards: [AdapterShard]

    public init(_ shards: [AdapterShard] = []) {
        self.shards = []
        for shard in shards { self = adding(shard) }
    }

    public var isEmpty: Bool { shards.isEmpty }

    /// Bytes the shards' weights hold in memory: what an adapter costs a replica.
    public var byteCount: Int { shards.reduce(0) { $0 + $1.weights.byteCount } }

    /// The shard that answers prompts no subject shard covers.
    public var general: AdapterShard? { shards.last { $0.scope == nil } }

    /// The prompts some shard answers: nil when a general shard answers every prompt.
    public var scope: AdapterScope? {
        general != nil ? nil : shards.reduce(AdapterScope()) { $0.adding($1.scope ?? AdapterScope()) }
    }

    /// These shards with `shard` added, less every shard `route` can no longer pick: an older
    /// general shard, and an older subject shard each of whose subjects some newer subject
    /// shard has. A prompt's share in such a shard is the share of one of its subjects, which
    /// that newer shard matches, and the newest wins a tie; so serving answers exactly as with
    /// them kept, and subjects corrected again cost no memory for the answers they replaced.
    public func adding(_ shard: AdapterShard) -> AdapterShards {
        var kept: [AdapterShard] = []
        var newer: [AdapterScope?] = []
        for older in (shards + [shard]).reversed() where !Self.replaces(newer, older.scope) {
            kept.append(older)
            newer.append(older.scope)
        }
        var next = self
        next.shards = kept.reversed()
        return next
    }

    /// Whether shards of scopes `newer` (nil: general), all added after one of scope `older`,
    /// leave the older one nothing to answer.
    public static func replaces(_ newer: [AdapterScope?], _ older: AdapterScope?) -> Bool {
        guard let older else { return newer.contains(nil) }
        return newer.reduce(AdapterScope()) { $0.adding($1 ?? AdapterScope()) }.includes(older)
    }

    /// The index of the shard that answers `messages`: among the subject shards that cover
    /// them, the one covering the largest share of a subject's words (the newest on a tie,
    /// so a correction of a fact corrected before wins); else the general shard; nil when
    /// the base model answers.
    public func route(_ messages: [ChatMessage]) -> Int? {
        let words = AdapterScope.userWords(messages)
        var best: (share: Double, index: Int)?
        for index in shards.indices.reversed() {
            guard let share = shards[index].scope?.coverage(words), share > (best?.share ?? 0) else { continue }
            best = (share, index)
        }
        return best?.index ?? shards.lastIndex { $0.scope == nil }
    }

    /// The weights that answer `messages` (nil: the base model).
    public func weights(for messages: [ChatMessage]) -> LoRAAdapter? {
        route(messages).map { shards[$0].weights }
    }
}
