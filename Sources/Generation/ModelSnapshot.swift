import Llama
import Tokenizer

/// An adapter as served: its name (`support` in `smollm2:support`), the version that
/// answers (`system_fingerprint`), its weights, and the base model it was trained on.
public struct ServedAdapter: Sendable {
    public let name: String
    public let version: String
    /// Its shards; none for an adapter with no version yet: the base model answers for it.
    public let shards: AdapterShards
    /// SHA-256 of the base model file it was trained on; nil when unknown.
    public let baseModelSHA256: String?

    public init(name: String, version: String, shards: AdapterShards, baseModelSHA256: String?) {
        self.name = name
        self.version = version
        self.shards = shards
        self.baseModelSHA256 = baseModelSHA256
    }

    /// An adapter of one shard: `weights` answering the prompts `scope` covers (nil: every prompt).
    public init(name: String, version: String, weights: LoRAAdapter?, baseModelSHA256: String?, scope: AdapterScope? = nil) {
        self.init(name: name, version: version, shards: AdapterShards(weights.map { [AdapterShard(weights: $0, scope: scope)] } ?? []),
                  baseModelSHA256: baseModelSHA256)
    }

    /// The prompts some shard answers (nil: every prompt); the base model answers the rest.
    public var scope: AdapterScope? { shards.isEmpty ? nil : shards.scope }

    /// The weights that answer `messages`: the shard's whose scope covers them, else the
    /// general shard's, else nil (the base model).
    public func weights(for messages: [ChatMessage]) -> LoRAAdapter? {
        shards.weights(for: messages)
    }
}

/// An immutable model a request runs on from start to end: base weights, tokenizer, the
/// adapters it serves, and the versions that answer (`system_fingerprint`). Swapping
/// installs a new snapshot; requests holding the old one finish on it and it is freed
/// with its last reference.
public final class ModelSnapshot: Sendable {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    /// The model id clients name, e.g. `smollm2`; adapters are `smollm2:NAME`.
    public let modelID: String
    /// The version the base model answers with, e.g. `base`.
    public let version: String
    public let chatTemplate: ChatTemplate
    /// Served adapters by name.
    public let adapters: [String: ServedAdapter]

    public init(model: LlamaModel, tokenizer: Tokenizer, modelID: String, version: String, adapters: [String: ServedAdapter] = [:]) {
        self.model = model
        self.tokenizer = tokenizer
        self.modelID = modelID
        self.version = version
        self.adapters = adapters
        chatTemplate = tokenizer.chatTemplate
    }

    /// The same base with `adapter` added or replacing the one of its name.
    public func serving(_ adapter: ServedAdapter) -> ModelSnapshot {
        var adapters = adapters
        adapters[adapter.name] = adapter
        return ModelSnapshot(model: model, tokenizer: tokenizer, modelID: modelID, version: version, adapters: adapters)
    }

    /// Model ids clients may name: the base, then each adapter as `base:name`.
    public var servedModelIDs: [String] {
        [modelID] + adapters.keys.sorted().map { "\(modelID):\($0)" }
    }

    /// What a request naming `id` runs with: nil adapter for the base; nil when unknown.
    public func resolve(_ id: String) -> (adapter: ServedAdapter?, version: String)? {
        if id == modelID { return (nil, version) }
        guard id.hasPrefix(modelID + ":"), let adapter = adapters[String(id.dropFirst(modelID.count + 1))] else { return nil }
        return (adapter, adapter.version)
    }

    /// Checks that `adapter` can serve on this base: shapes and rank, and the base model it
    /// was trained on; reading every weight for the finiteness check also warms it (an
    /// adapter has no other lazy state), so its first request pays no first-use cost.
    public func validate(_ adapter: ServedAdapter) throws {
        guard !adapter.shards.isEmpty else { return }
        for shard in adapter.shards.shards { try shard.weights.validate(for: model.config) }
        if let base = adapter.baseModelSHA256, base != model.file.sha256 {
            throw ModelError("adapter \(adapter.version) was trained on base model \(base.prefix(12))…, not \(model.file.sha256.prefix(12))…")
        }
        guard adapter.shards.shards.allSatisfy(\.weights.isFinite) else { throw ModelError("adapter \(adapter.version) holds NaN or infinite weights") }
    }
}
