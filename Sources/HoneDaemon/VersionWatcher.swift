import Foundation
import Generation
import Learning
import JSON
import Logging
import Postgres
import Queue
import Registry
import ServiceLifecycle
import Synchronization
import Tensor
import Training

/// Keeps this replica serving every adapter's active version: on a `hone_versions`
/// notification (and every poll interval, in case one was missed) it compares the registry
/// with the snapshot, fetches changed versions' blobs, checks their SHA-256, shapes and
/// base model, and swaps them in. Also writes this replica's heartbeat row.
struct VersionWatcher: Service {
    let registry: Registry
    let holder: SnapshotHolder
    let wake: WakeSignal
    /// Adapters served from directories (`--adapter`); the registry does not manage them.
    let localAdapters: Set<String>
    let replica: ReplicaIdentity
    /// Decodes new versions as learning work.
    let compute: ComputeScheduler
    /// Where freshness (INSERT → served here) is counted.
    let activity: LearnerActivity
    let pollInterval: Duration
    let logger: Logger

    /// Each adapter's version served before the current one, checked and decoded, so a
    /// rollback of one step swaps at once.
    let recent: RecentAdapters
    /// Versions refused lately, by version id, with when: retried after `refusalRetry`, not at
    /// every poll, and logged and counted once per refusal, not once per poll.
    private let refused = RefusedVersions()
    static let refusalRetry = Duration.seconds(60)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var lastHeartbeat = ContinuousClock.now - .seconds(3600)
            while !Task.isCancelled {
                if holder.snapshot != nil {
                    await reconcile()
                    if ContinuousClock.now - lastHeartbeat >= .seconds(5) {
                        await heartbeat()
                        lastHeartbeat = .now
                    }
                }
                await wake.wait(timeout: holder.snapshot == nil ? .milliseconds(100) : pollInterval)
            }
        }
        _ = try? await registry.pool.query("DELETE FROM hone.replicas WHERE id = \(replica.id)")
    }

    /// Installs what the registry says each adapter should serve, where it differs.
    func reconcile() async {
        guard let snapshot = holder.snapshot else { return }
        let adapters: [AdapterRecord]
        do { adapters = try await registry.adapters() } catch {
            logger.warning("version watcher cannot read the registry; serving what it has", metadata: ["error": "\(error)"])
            return
        }
        defer { holder.versionsInstalled() }
        for record in adapters where !localAdapters.contains(record.name) {
            let wanted = record.activeVersion.map { VersionRecord.id(adapter: record.name, version: $0) } ?? "\(record.name)@base"
            if holder.snapshot?.adapters[record.name]?.version == wanted { continue }
            if let at = refused.at(wanted), ContinuousClock.now - at < Self.refusalRetry { continue }
            do {
                let served: ServedAdapter
                if let version = record.activeVersion {
                    let model = snapshot.model
                    if let cached = recent.get(wanted) {
                        served = cached
                    } else {
                        // The version served now is usually the parent: only the new shard is decoded.
                        let shards = try await VersionShards(registry: registry, model: model, compute: compute).load(record.name, version) { id in
                            (self.recent.get(id) ?? snapshot.adapters[record.name].flatMap { $0.version == id ? $0 : nil })?.shards
                        }
                        served = ServedAdapter(name: record.name, version: wanted, shards: shards, baseModelSHA256: model.file.sha256)
                    }
                } else {
                    served = ServedAdapter(name: record.name, version: wanted, weights: nil, baseModelSHA256: nil)
                }
                try await Parallel.onThread { [holder] in try holder.install(served) }
                if !served.shards.isEmpty { recent.put(served) }
                if let version = record.activeVersion { await countFreshness(record.name, version) }
                logger.info("adapter version installed", metadata: ["adapter.name": "\(record.name)", "adapter.version": "\(wanted)"])
            } catch let error as PostgresError {
                logger.warning("cannot fetch adapter version; keeping the one served, retrying", metadata: [
                    "adapter.name": "\(record.name)", "adapter.version": "\(wanted)", "error": "\(error)"])
            } catch {
                // A blob that fails its checks (a corrupted row, another base model) is refused
                // and reported; requests go on with the version served before.
                refused.mark(wanted)
                holder.refused()
                logger.error("cannot serve adapter version; keeping the one served", metadata: [
                    "adapter.name": "\(record.name)", "adapter.version": "\(wanted)", "error": "\(error)",
                    "retry.seconds": "\(Self.refusalRetry / .seconds(1))"])
            }
        }
    }

    /// When `version` was just published (the adapter's latest event), the seconds from
    /// each of its submissions' INSERT to now, when this replica serves it. A rollback or
    /// an activation of an older version is not fresh learning and is not counted.
    func countFreshness(_ adapter: String, _ version: Int) async {
        do {
            let rows = try await registry.pool.query("""
                SELECT extract(epoch FROM clock_timestamp() - j.created_at)::float8 AS seconds
                FROM hone.model_versions v JOIN hone.jobs j ON j.id = ANY(v.job_ids)
                WHERE v.adapter = \(adapter) AND v.version = \(version)
                  AND (SELECT e.action = 'publish' AND e.to_version = v.version FROM hone.adapter_events e
                       WHERE e.adapter = v.adapter ORDER BY e.id DESC LIMIT 1)
                """)
            activity.served(afterSeconds: try rows.map { try $0.decode("seconds") })
        } catch {
            logger.warning("cannot read the installed version's submissions for freshness", metadata: ["error": "\(error)"])
        }
    }

    /// Upserts this replica's row: alive, and what it serves.
    func heartbeat() async {
        guard let snapshot = holder.snapshot else { return }
        var versions: [String: JSONValue] = [:]
        for id in snapshot.servedModelIDs { versions[id] = snapshot.resolve(id).map { .string($0.version) } }
        let served = JSONText(JSONValue.object(versions).jsonText)
        do {
            try await registry.pool.query("""
                INSERT INTO hone.replicas (id, host, pid, base_model_sha256, served, started_at, heartbeat_at)
                VALUES (\(replica.id), \(replica.host), \(Int(replica.pid)), \(snapshot.model.file.sha256), \(served)::jsonb, now(), now())
                ON CONFLICT (id) DO UPDATE SET served = EXCLUDED.served, heartbeat_at = now()
                """)
        } catch {
            logger.warning("replica heartbeat failed", metadata: ["error": "\(error)"])
        }
    }
}

/// When each version was last refused, by version id.
final class RefusedVersions: Sendable {
    private let times = Mutex<[String: ContinuousClock.Instant]>([:])

    func at(_ version: String) -> ContinuousClock.Instant? { times.withLock { $0[version] } }

    func mark(_ version: String) { times.withLock { $0[version] = .now } }
}

/// Each adapter's last installed versions (by default the served one and the one before
/// it), so a rollback of one step swaps at once, with no blob fetch or decode.
///
/// Kept per adapter so one busy adapter cannot push another's previous version out, and
/// only one step back: what it costs is bounded by one version's own shards per adapter.
/// (Measured in the soak, which rolls back now and then: a cache of the last four versions
/// of all adapters filled 0 → 56 MB over its first 25 minutes, one shard per version, and
/// the daemon's RSS grew with it.) A rollback further back loads from the registry, as
/// TF Serving, which keeps only the served version, loads one.
final class RecentAdapters: Sendable {
    private let entries = Mutex<[String: [ServedAdapter]]>([:])
    /// Versions kept per adapter, the served one included.
    let perAdapter: Int

    init(perAdapter: Int = 2) { self.perAdapter = perAdapter }

    func get(_ version: String) -> ServedAdapter? {
        entries.withLock { lists in lists.values.lazy.compactMap { $0.first { $0.version == version } }.first }
    }

    func put(_ adapter: ServedAdapter) {
        entries.withLock { lists in
            var list = lists[adapter.name, default: []]
            list.removeAll { $0.version == adapter.version }
            list.append(adapter)
            if list.count > perAdapter { list.removeFirst(list.count - perAdapter) }
            lists[adapter.name] = list
        }
    }

    /// Bytes of weights these versions keep that `served` does not hold: what instant
    /// rollback costs in memory. Versions share the shards they have in common (a child is
    /// its parent's shards and one more), so each shard counts once.
    func keptBytes(beyond served: [ServedAdapter]) -> Int {
        // A shard's identity is its first factor's buffer: copies of one decode share it.
        func storage(_ shard: AdapterShard) -> UInt? {
            shard.weights.keys.first.flatMap { key in
                shard.weights.weights[key]?.a.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
            }
        }
        var seen = Set(served.flatMap(\.shards.shards).compactMap(storage))
        return entries.withLock { lists in
            lists.values.joined().flatMap(\.shards.shards).reduce(0) { bytes, shard in
                guard let id = storage(shard), seen.insert(id).inserted else { return bytes }
                return bytes + shard.weights.byteCount
            }
        }
    }
}

/// Who this process is, in `hone.replicas`, job `attempted_by` and audit rows.
struct ReplicaIdentity: Sendable {
    let id: String
    let host: String
    let pid: Int32

    static func current() -> ReplicaIdentity {
        let host = ProcessInfo.processInfo.hostName
        let pid = ProcessInfo.processInfo.processIdentifier
        return ReplicaIdentity(id: "\(host):\(pid)", host: host, pid: pid)
    }
}
