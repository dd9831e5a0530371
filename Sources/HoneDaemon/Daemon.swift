import EmbeddedPostgres
import Foundation
import Logging
import Postgres
import Queue
import Registry
import Server
import Tensor
import Generation
import ServiceLifecycle

/// `honed`'s settings, validated once at start.
public struct DaemonConfiguration: Sendable {
    /// The database; nil runs the embedded default (a private cluster under the data dir).
    public var databaseURL: String?
    public var paths: HonePaths
    /// Connections in the shared pool.
    public var poolSize: Int
    public var maintenance: QueueMaintenance.Configuration
    public var backoff: Backoff
    /// The GGUF model to serve.
    public var modelPath: String
    /// PEFT adapter directories served as `model:NAME`, by name.
    public var adapterDirectories: [String: String] = [:]
    public var server: ServerConfiguration
    /// Sequences decoded together at most.
    public var maxBatch: Int
    /// Run the learner on this replica (replicas that only serve turn it off).
    public var learner = true
    /// Lease of the jobs an update holds (nil: each job kind's); a crashed replica's jobs run again after it.
    public var learnerLease: Duration?
    /// Chaos testing only (`HONE_FAILPOINT_CRASH`): the learner traps on a job whose payload
    /// contains this text. See `LearnerService.Configuration.crashMarker`.
    public var learnerCrashMarker: String?
    /// Learning's share of a core that serving also wants (ComputeScheduler).
    public var learningShare: Double = 0.1
    /// How often the version watcher checks the registry when no notification came.
    public var versionPollInterval: Duration = .seconds(2)
    /// Serve on a non-loopback address while `hone.api_keys` holds no key (an open API).
    public var allowOpenAPI = false

    public init(databaseURL: String?, paths: HonePaths, modelPath: String, server: ServerConfiguration = .init(),
                maxBatch: Int = 16, poolSize: Int = 8,
                maintenance: QueueMaintenance.Configuration = .init(), backoff: Backoff = .init()) {
        self.databaseURL = databaseURL
        self.paths = paths
        self.modelPath = modelPath
        self.server = server
        self.maxBatch = maxBatch
        self.poolSize = poolSize
        self.maintenance = maintenance
        self.backoff = backoff
    }
}

/// The daemon: prepares the database, then runs its services in one ServiceGroup until
/// SIGTERM or SIGINT, and stops the private cluster it started.
public enum Daemon {
    /// Whether `host` only accepts connections from this machine.
    static func isLoopback(_ host: String) -> Bool {
        ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) || host.hasPrefix("127.")
    }

    public static func run(_ configuration: DaemonConfiguration, logger: Logger) async throws {
        var embedded: PostgresCluster?
        let conninfo: String
        if let url = configuration.databaseURL {
            conninfo = url
        } else {
            let (cluster, url) = try await HoneDatabase.startEmbedded(paths: configuration.paths, logger: logger)
            embedded = cluster
            conninfo = url
            logger.info("embedded PostgreSQL ready", metadata: ["postgres.url": "\(url)"])
        }
        defer {
            if let embedded { try? embedded.stop(logger: logger) }
        }
        let applied = try await HoneDatabase.prepare(conninfo: conninfo, paths: configuration.paths, logger: logger)
        logger.info("database ready", metadata: ["migrations.applied": "\(applied.count)"])

        let pool = PostgresPool(conninfo: conninfo, size: configuration.poolSize, logger: logger)
        let keys = APIKeys(try await APIKeyWatcher.load(pool))
        if keys.count == 0 && !configuration.allowOpenAPI && !Self.isLoopback(configuration.server.host) {
            await pool.close()
            throw DaemonError("refusing to serve an open API on \(configuration.server.host): no API key exists. "
                + "Create one with `honectl keys create --adapter NAME` (or --operator), serve on 127.0.0.1, or pass --allow-open-api")
        }
        let queue = JobQueue(pool: pool, backoff: configuration.backoff)
        let maintenance = QueueMaintenance(queue: queue, configuration: configuration.maintenance, logger: logger)
        let holder = SnapshotHolder(awaitingVersions: true)
        let compute = ComputeScheduler(learningShare: configuration.learningShare)
        let scheduler = BatchScheduler(maxBatch: configuration.maxBatch, compute: compute)
        // The learner's generations batch among themselves, behind every client.
        let learningScheduler = BatchScheduler(maxBatch: configuration.maxBatch, compute: compute, work: .learning)
        let completionLog = CompletionLog(pool: pool, logger: logger)
        let registry = Registry(pool: pool)
        let replica = ReplicaIdentity.current()
        let jobsWake = WakeSignal(), versionsWake = WakeSignal(), keysWake = WakeSignal()
        let catalogue = try JobCatalogue(directory: configuration.paths.jobs)
        let activity = LearnerActivity()
        let recentAdapters = RecentAdapters()
        let report = OperationsReport(conninfo: conninfo, activity: activity, replica: replica, holder: holder,
                                      recentAdapters: recentAdapters, logger: logger)
        let server = HoneServer(configuration: configuration.server, holder: holder, scheduler: scheduler,
                                recorder: completionLog, report: report, keys: keys, logger: logger)
        // Start order is dependency order; shutdown runs in reverse, so HTTP requests
        // finish before the scheduler stops.
        var groupConfiguration = ServiceGroupConfiguration(services: [
                .init(service: maintenance),
                .init(service: completionLog),
                .init(service: SchedulerService(scheduler: scheduler)),
                .init(service: SchedulerService(scheduler: learningScheduler)),
                .init(service: NotificationService(conninfo: conninfo, jobs: jobsWake, versions: versionsWake, keys: keysWake,
                                                    logger: logger)),
                .init(service: APIKeyWatcher(pool: pool, keys: keys, wake: keysWake, pollInterval: configuration.versionPollInterval,
                                             logger: logger)),
                .init(service: ModelLoaderService(path: configuration.modelPath, adapters: configuration.adapterDirectories,
                                                  holder: holder, logger: logger)),
                .init(service: VersionWatcher(registry: registry, holder: holder, wake: versionsWake,
                                              localAdapters: Set(configuration.adapterDirectories.keys), replica: replica, compute: compute,
                                              activity: activity, pollInterval: configuration.versionPollInterval, logger: logger,
                                              recent: recentAdapters)),
            ] + (configuration.learner ? [
                .init(service: LearnerService(queue: queue, registry: registry, catalogue: catalogue, holder: holder,
                                              scheduler: learningScheduler, compute: compute, wake: jobsWake, replica: replica, activity: activity,
                                              configuration: .init(lease: configuration.learnerLease, crashMarker: configuration.learnerCrashMarker),
                                              logger: logger)),
            ] : []) + [
                .init(service: server.application()),
            ], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [.sigquit], logger: logger)
        // An open SSE stream would otherwise hold shutdown until it ends (NOTES.md).
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(30)
        let group = ServiceGroup(configuration: groupConfiguration)
        logger.info("honed running", metadata: ["postgres.url": "\(ConnectionString.redacted(conninfo))"])
        try await group.run()
        await pool.close()
        await report.pool.close()
    }
}

/// The daemon cannot start as configured.
struct DaemonError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
