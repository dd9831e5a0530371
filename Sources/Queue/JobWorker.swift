import JSON
import Logging
import Postgres
import ServiceLifecycle

/// Thrown by a handler for a job that can never succeed: it is discarded at once with
/// the reason, not retried.
public struct JobDiscard: Error, Sendable {
    public let reason: String
    public init(reason: String) { self.reason = reason }
}

/// Claims jobs and runs a handler on each: heartbeats while it runs, completes with the
/// handler's result, fails (retry with backoff) when it throws, discards invalid
/// payloads before the handler sees them. Waits for a NOTIFY between empty claims, or
/// for the poll interval when notifications do not come (LISTEN broken or lost).
public struct JobWorker: Service {
    public struct Configuration: Sendable {
        /// Recorded in `attempted_by`, for operators and rescue messages.
        public var name: String
        /// Kinds this worker runs; nil for any kind in the catalogue.
        public var kinds: [String]?
        /// Only jobs of this adapter; nil for any.
        public var adapter: String?
        public var batchSize: Int
        public var lease: Duration
        /// How long to wait for a NOTIFY before claiming again anyway.
        public var pollInterval: Duration

        public init(name: String, kinds: [String]? = nil, adapter: String? = nil, batchSize: Int = 8,
                    lease: Duration = .seconds(120), pollInterval: Duration = .seconds(2)) {
            self.name = name
            self.kinds = kinds
            self.adapter = adapter
            self.batchSize = batchSize
            self.lease = lease
            self.pollInterval = pollInterval
        }
    }

    /// Runs one job; returns the result stored with the completed job.
    public typealias Handler = @Sendable (Job) async throws -> JSONValue?

    let queue: JobQueue
    let catalogue: JobCatalogue
    let configuration: Configuration
    let wake: WakeSignal
    let handler: Handler
    let logger: Logger

    public init(queue: JobQueue, catalogue: JobCatalogue, configuration: Configuration, wake: WakeSignal,
                logger: Logger, handler: @escaping Handler) {
        self.queue = queue
        self.catalogue = catalogue
        self.configuration = configuration
        self.wake = wake
        self.handler = handler
        self.logger = logger
    }

    /// Works until the task is cancelled or a graceful shutdown begins; a job in hand is
    /// finished first.
    public func run() async throws {
        let kinds = configuration.kinds ?? catalogue.kinds.keys.sorted()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let jobs: [Job]
            do {
                jobs = try await queue.claim(limit: configuration.batchSize, worker: configuration.name, kinds: kinds,
                                             adapter: configuration.adapter, lease: configuration.lease)
            } catch is CancellationError {
                return
            } catch {
                logger.warning("claim failed; retrying after the poll interval", metadata: ["error": "\(error)"])
                await wake.wait(timeout: configuration.pollInterval)
                continue
            }
            if jobs.isEmpty {
                await wake.wait(timeout: configuration.pollInterval)
                continue
            }
            for job in jobs {
                await work(on: job)
            }
        }
    }

    /// Runs one claimed job to its end: completed, failed or discarded — or abandoned
    /// when the lease was lost, in which case the newer holder decides.
    func work(on job: Job) async {
        var logger = logger
        logger[metadataKey: "job.id"] = "\(job.id)"
        logger[metadataKey: "job.kind"] = "\(job.kind)"
        logger[metadataKey: "job.attempt"] = "\(job.attempt)"
        do {
            if let reason = catalogue.rejection(kind: job.kind, payload: job.args) {
                logger.warning("discarding job with invalid payload", metadata: ["job.reason": "\(reason)"])
                try await queue.discard(job.lease, reason: reason)
                return
            }
            let outcome = await runWithHeartbeat(job)
            switch outcome {
            case .success(let result):
                try await queue.complete([(job.lease, result)])
            case .failure(let discard as JobDiscard):
                try await queue.discard(job.lease, reason: discard.reason)
            case .failure(is LeaseLost):
                logger.warning("lease lost (job rescued, cancelled or finished elsewhere); abandoning the attempt")
            case .failure(let error):
                let state = try await queue.fail(job.lease, error: "\(error)")
                logger.warning("job failed", metadata: ["error": "\(error)", "job.state": "\(state?.rawValue ?? "lease lost")"])
            }
        } catch {
            // Finalizing failed (database down): the lease will expire and the leader rescues it.
            logger.error("could not record the job's outcome; its lease will expire and it will be retried", metadata: ["error": "\(error)"])
        }
    }

    struct LeaseLost: Error {}

    /// Runs the handler while renewing the lease every third of its length; stops the
    /// handler when a renewal finds the lease gone.
    func runWithHeartbeat(_ job: Job) async -> Result<JSONValue?, Error> {
        let lease = configuration.lease
        return await withTaskGroup(of: Result<JSONValue?, Error>?.self) { group in
            group.addTask {
                do { return .success(try await handler(job)) } catch { return .failure(error) }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: lease / 3)
                    if Task.isCancelled { return nil }
                    do {
                        if try await !queue.heartbeat(job.lease, lease: lease) { return .failure(LeaseLost()) }
                    } catch {
                        // A missed heartbeat is not fatal; the lease still has two thirds left.
                        continue
                    }
                }
                return nil
            }
            while let next = await group.next() {
                if let outcome = next {
                    group.cancelAll()
                    return outcome
                }
            }
            return .failure(CancellationError())
        }
    }
}
