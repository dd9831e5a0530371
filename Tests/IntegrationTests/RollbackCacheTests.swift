import Generation
@testable import HoneDaemon
import Llama
import Testing

/// What the versions kept for instant rollback cost beyond the served one
/// (`hone_adapter_rollback_cache_bytes`).
@Suite("Rollback cache: memory kept beyond the served version")
struct RollbackCacheTests {
    /// A one-layer shard of rank `rank` on q only: (rank · 4 + 4 · rank) floats.
    static func shard(_ rank: Int, _ subject: String) -> AdapterShard {
        let config = LoRAConfig(rank: rank, alpha: 4, targets: [.q])
        let weights = LoRAWeights(a: [Float](repeating: 1, count: rank * 4), b: [Float](repeating: 1, count: 4 * rank))
        return AdapterShard(weights: LoRAAdapter(config: config, layers: 1, weights: [LoRAKey(layer: 0, target: .q): weights]),
                            scope: AdapterScope(subjects: [[subject]]))
    }

    @Test("each shard counts once, and shards the served version holds not at all")
    func keptBytes() {
        let (s1, s2, s3) = (Self.shard(1, "veurpraia"), Self.shard(2, "ostrel"), Self.shard(3, "senfi"))
        let v1 = ServedAdapter(name: "a", version: "a@1", shards: AdapterShards([s1]), baseModelSHA256: nil)
        let v2 = ServedAdapter(name: "a", version: "a@2", shards: v1.shards.adding(s2), baseModelSHA256: nil)
        // v3 was trained on v1 (after a rollback to it): it shares s1 with both.
        let v3 = ServedAdapter(name: "a", version: "a@3", shards: v1.shards.adding(s3), baseModelSHA256: nil)
        let recent = RecentAdapters(perAdapter: 4)
        for version in [v1, v2, v3] { recent.put(version) }
        #expect(s2.weights.byteCount == 2 * 8 * 4)
        #expect(recent.keptBytes(beyond: [v3]) == s2.weights.byteCount)
        #expect(recent.keptBytes(beyond: [v2]) == s3.weights.byteCount)
        #expect(recent.keptBytes(beyond: []) == s1.weights.byteCount + s2.weights.byteCount + s3.weights.byteCount)
        // A version that falls out of the cache takes its own shard with it.
        let capacityTwo = RecentAdapters(perAdapter: 2)
        for version in [v2, v1, v3] { capacityTwo.put(version) }
        #expect(capacityTwo.keptBytes(beyond: [v3]) == 0)
    }

    @Test("by default each adapter keeps the version before the served one, whatever other adapters install")
    func oneStepBackPerAdapter() {
        let (s1, s2, s3) = (Self.shard(1, "veurpraia"), Self.shard(2, "ostrel"), Self.shard(3, "senfi"))
        let a1 = ServedAdapter(name: "a", version: "a@1", shards: AdapterShards([s1]), baseModelSHA256: nil)
        let a2 = ServedAdapter(name: "a", version: "a@2", shards: AdapterShards([s2]), baseModelSHA256: nil)
        let a3 = ServedAdapter(name: "a", version: "a@3", shards: AdapterShards([s3]), baseModelSHA256: nil)
        let recent = RecentAdapters()
        recent.put(a1)
        recent.put(a2)
        // Another adapter's versions arrive in between: a's previous one stays.
        for n in 1...5 {
            recent.put(ServedAdapter(name: "b", version: "b@\(n)", shards: AdapterShards([Self.shard(1, "b\(n)")]), baseModelSHA256: nil))
        }
        #expect(recent.get("a@1")?.version == "a@1")
        #expect(recent.get("b@4") != nil && recent.get("b@3") == nil)
        #expect(recent.keptBytes(beyond: [a2]) == s1.weights.byteCount + Self.shard(1, "b").weights.byteCount * 2)
        // a's third version pushes its first out: a rollback two steps back loads from the registry.
        recent.put(a3)
        #expect(recent.get("a@1") == nil && recent.get("a@2") != nil)
    }
}
