import Llama
import Synchronization

/// Keys and values of the base model's prompt prefixes that end where a turn begins: a
/// request whose prompt starts with one (the default system turn every chat shares, or the
/// earlier turns of a conversation sent again) prefills only the rest, as llama.cpp's
/// server and vLLM reuse prompt prefixes.
///
/// Exactness does not depend on it: every prompt is prefilled in chunks that end at its turn
/// starts (`LlamaModel.prefill`), cached or not, so a request's output never depends on what
/// the cache held or which requests came before. A prefix is kept per adapter preparation
/// (`LoRAAdapter.inferenceID`: an adapter's k and v products change it; an unprepared
/// adapter's prefixes are not kept), so requests to a served version reuse its system turn
/// as requests to the base model do. The least recently used prefixes go first once more
/// than `maxTokens` tokens are held (46 KB per token on SmolLM2-135M).
public final class PrefixCache: Sendable {
    struct Entry {
        let model: LlamaModel
        let prefix: KVPrefix
        var used: UInt64
    }

    /// A prefix's tokens and the adapter preparation it ran with (nil: the base model).
    struct Key: Hashable {
        let tokens: [Int]
        let adapter: UInt64?
    }

    struct State {
        var entries: [Key: Entry] = [:]
        var tokens = 0
        var clock: UInt64 = 0
    }

    /// Most tokens held across all prefixes (0: no caching).
    public let maxTokens: Int
    private let state = Mutex(State())
    private let reused = Atomic<Int>(0)
    private let computed = Atomic<Int>(0)

    public init(maxTokens: Int = 1024) {
        self.maxTokens = maxTokens
    }

    /// Prompt tokens whose keys and values came from the cache, and prompt tokens run
    /// through the model, since the start.
    public var counts: (reused: Int, computed: Int) {
        (reused.load(ordering: .relaxed), computed.load(ordering: .relaxed))
    }

    /// Tokens held now.
    public var heldTokens: Int { state.withLock { $0.tokens } }

    /// The longest cached prefix of `tokens` that ends at one of `ends` (ascending), for
    /// `model` with the adapter preparation `adapter` (nil: the base model).
    func longest(model: LlamaModel, adapter: UInt64?, tokens: [Int], ends: [Int]) -> KVPrefix? {
        state.withLock { state in
            for end in ends.reversed() {
                let key = Key(tokens: Array(tokens[0..<end]), adapter: adapter)
                guard var entry = state.entries[key] else { continue }
                guard entry.model === model else {
                    // A base model that was replaced: drop its prefix (and its hold on the model).
                    state.entries[key] = nil
                    state.tokens -= entry.prefix.length
                    continue
                }
                state.clock += 1
                entry.used = state.clock
                state.entries[key] = entry
                return entry.prefix
            }
            return nil
        }
    }

    /// Keeps `prefix` (the keys and values of `tokens` with `adapter`), evicting the least
    /// recently used.
    func store(model: LlamaModel, adapter: UInt64?, tokens: [Int], prefix: KVPrefix) {
        guard prefix.length <= maxTokens else { return }
        let key = Key(tokens: tokens, adapter: adapter)
        state.withLock { state in
            if let old = state.entries[key] { state.tokens -= old.prefix.length }
            state.clock += 1
            state.entries[key] = Entry(model: model, prefix: prefix, used: state.clock)
            state.tokens += prefix.length
            while state.tokens > maxTokens, let oldest = state.entries.min(by: { $0.value.used < $1.value.used }) {
                state.entries[oldest.key] = nil
                state.tokens -= oldest.value.prefix.length
            }
        }
    }

    func count(reused: Int, computed: Int) {
        self.reused.add(reused, ordering: .relaxed)
        self.computed.add(computed, ordering: .relaxed)
    }
}

extension LlamaModel {
    /// Runs a prompt into the empty `cache` and returns its last token's logits. The prompt
    /// goes in chunks ending at `turnStarts` (those leaving at least two tokens on each
    /// side, so every chunk takes the prompt kernels), the same chunks whether or not
    /// `reuse` holds a prefix: with a prefix cached for the base model or this adapter's
    /// preparation, the chunks it covers are loaded instead of run, and every prefix run is
    /// offered to it.
    public func prefill(_ tokens: [Int], turnStarts: [Int] = [], cache: KVCache, adapter: LoRAAdapter? = nil,
                        mode: MatmulMode = .fast, reuse: PrefixCache? = nil) throws -> [Float] {
        let last = try prefillAllButLast(tokens, turnStarts: turnStarts, cache: cache, adapter: adapter, mode: mode, reuse: reuse)
        return try forward([SequenceInput(tokens: last, cache: cache, adapter: adapter)], mode: mode)[0][0]
    }

    /// `prefill` up to its last chunk, which it returns (never empty) for the caller to run,
    /// e.g. in the same pass as other sequences' decode rows.
    public func prefillAllButLast(_ tokens: [Int], turnStarts: [Int] = [], cache: KVCache, adapter: LoRAAdapter? = nil,
                                  mode: MatmulMode = .fast, reuse: PrefixCache? = nil) throws -> [Int] {
        let ends = turnStarts.filter { $0 >= 2 && $0 <= tokens.count - 2 }.sorted()
        let adapterID = adapter?.inferenceID
        let reuse = (adapter == nil || adapterID != nil) && mode == .fast ? reuse : nil
        var start = 0
        if let prefix = reuse?.longest(model: self, adapter: adapterID, tokens: tokens, ends: ends) {
            cache.load(prefix)
            start = prefix.length
        }
        reuse?.count(reused: start, computed: tokens.count - start)
        for end in ends where end > start {
            _ = try forward([SequenceInput(tokens: Array(tokens[start..<end]), cache: cache, adapter: adapter)], mode: mode)
            reuse?.store(model: self, adapter: adapterID, tokens: Array(tokens[0..<end]), prefix: cache.prefix(end))
            start = end
        }
        return Array(tokens[start...])
    }
}
