import Generation
import JSON
import Learning
import Llama
import Registry
import Tensor
import Training

/// The shards an adapter version serves, read from the registry. A version trained with
/// shards (`metrics.shard`: its subjects, or "general") stores only its own shard; the
/// rest are its ancestors', found through `parent_version`: every subject shard on the
/// way, and the newest general shard. A version from before shards stores the whole
/// adapter in its blob, with `metrics.scope`, and ends the walk.
struct VersionShards {
    let registry: Registry
    let model: LlamaModel
    let compute: ComputeScheduler

    /// The shards of `adapter`'s `version`; `known` gives the shards of a version already
    /// at hand (the one served), so a new child decodes only its own blob.
    func load(_ adapter: String, _ version: Int, known: (String) -> AdapterShards? = { _ in nil }) async throws -> AdapterShards {
        var chain: [(record: VersionRecord, shard: AdapterScope??)] = []
        var base = AdapterShards()
        var next: Int? = version
        while let number = next {
            let id = VersionRecord.id(adapter: adapter, version: number)
            if let shards = known(id) {
                base = shards
                break
            }
            guard let record = try await registry.version(adapter, number) else { throw SnapshotError("version \(id) does not exist") }
            guard let shard = AdapterScope.shard(metrics: record.metrics) else {
                chain.append((record, .some(AdapterScope(metrics: record.metrics))))
                break
            }
            chain.append((record, shard))
            next = record.parentVersion
        }
        var shards = base
        // A shard that newer ones on the chain replace (an older general shard, or subjects
        // all corrected again) would be dropped on adding: its blob is not read.
        func replaced(_ index: Int) -> Bool {
            guard case .some(let scope) = chain[index].shard else { return false }
            return AdapterShards.replaces(chain[..<index].compactMap { $0.shard }, scope)
        }
        for (index, link) in chain.enumerated().reversed() {
            if replaced(index) { continue }
            guard let blob = try await registry.blob(adapter, link.record.version) else {
                throw SnapshotError("version \(link.record.id) has no blob")
            }
            let (model, id) = (model, link.record.id)
            // Decoding is background work: it must not slow serving.
            let weights = try await compute.run(.learning) { try AdapterBlob.decode(blob.bytes, sha256: blob.sha256, model: model, source: id) }
            shards = shards.adding(AdapterShard(weights: weights, scope: link.shard ?? nil))
        }
        return shards
    }
}
