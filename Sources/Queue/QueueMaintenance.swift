import Logging
import Postgres
import ServiceLifecycle

/// The queue's leader: one replica at a time (a session advisory lock on a dedicated
/// connection) rescues expired leases, stages due jobs and prunes old finished jobs.
/// When the leader's connection dies its lock goes with it and another replica takes over
/// at its next tick.
public struct QueueMaintenance: Service {
    public struct Configuration: Sendable {
        /// How often the leader looks; also the resolution of scheduled times.
        public var interval: Duration
        /// Finished jobs older than this are deleted.
        public var retention: Duration
        public init(interval: Duration = .seconds(1), retention: Duration = .seconds(7 * 24 * 3600)) {
            self.interval = interval
            self.retention = retention
        }
    }

    /// What one tick did, for logs and tests.
    public struct Tick: Sendable, Equatable {
        public var isLeader: Bool
        public var rescued = 0
        public var staged = 0
        public var pruned = 0
    }

    /// Key of the leader advisory lock ("hone ldr" in ASCII).
    static let leaderLockKey: Int64 = 0x686F_6E65_206C_6472

    let queue: JobQueue
    let configuration: Configuration
    let logger: Logger

    public init(queue: JobQueue, configuration: Configuration = Configuration(), logger: Logger) {
        self.queue = queue
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        var connection: PostgresConnection?
        defer { connection?.close() }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if connection == nil || !connection!.isOpen {
                    connection?.close()
                    connection = try await PostgresConnection.connect(queue.pool.conninfo, logger: logger)
                    // The leader's lock lives as long as this session. A leader frozen (stopped,
                    // swapped out) stops ticking; the server then ends its idle session and
                    // another replica takes over rescuing the jobs it would have rescued.
                    let idle = max(configuration.interval * 10, .seconds(10))
                    try await connection!.query("SELECT set_config('idle_session_timeout', \(String(Int(idle / .milliseconds(1)))), false)")
                }
                let tick = try await Self.tick(queue: queue, connection: connection!, retention: configuration.retention)
                if tick.rescued + tick.staged + tick.pruned > 0 {
                    logger.info("queue maintenance", metadata: [
                        "queue.rescued": "\(tick.rescued)", "queue.staged": "\(tick.staged)", "queue.pruned": "\(tick.pruned)",
                    ])
                }
            } catch is CancellationError {
                break
            } catch {
                logger.warning("queue maintenance failed; retrying", metadata: ["error": "\(error)"])
                connection?.close()
                connection = nil
            }
            try? await Task.sleep(for: configuration.interval)
        }
    }

    /// One round: take (or keep) leadership on `connection`, then rescue, stage, prune.
    /// Exposed so tests drive the leader step by step instead of sleeping.
    public static func tick(queue: JobQueue, connection: PostgresConnection, retention: Duration) async throws -> Tick {
        // Taking a session lock twice would hold it twice; take it only when not held.
        let leader = try await connection.query("""
            SELECT CASE WHEN EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
                  AND classid = (\(leaderLockKey)::bigint >> 32)::oid AND objid = (\(leaderLockKey)::bigint & 4294967295)::oid)
            THEN true ELSE pg_try_advisory_lock(\(leaderLockKey)::bigint) END AS leader
            """)[0].decode("leader", as: Bool.self)
        guard leader else { return Tick(isLeader: false) }
        var tick = Tick(isLeader: true)
        tick.rescued = try await queue.rescueExpired(on: connection)
        tick.staged = try await queue.stageDue(on: connection)
        tick.pruned = try await queue.prune(retention: retention, on: connection)
        return tick
    }
}
