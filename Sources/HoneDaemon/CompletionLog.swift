import Foundation
import Logging
import Postgres
import Server
import ServiceLifecycle
import Synchronization

/// Logs served completions to `hone.completions` in batches, off the serving path.
/// `record` appends to a bounded buffer and returns; the service flushes every
/// `interval` in one multi-row INSERT. When the database is slow or down the buffer keeps
/// the newest `capacity` rows and counts what it dropped; responses never wait for it.
public final class CompletionLog: CompletionRecorder, Service {
    private struct State {
        var buffer: [CompletionRecord] = []
        var dropped = 0
        var written = 0
        var failures = 0
    }
    private let state = Mutex(State())
    private let pool: PostgresPool
    private let capacity: Int
    private let interval: Duration
    private let logger: Logger

    public init(pool: PostgresPool, capacity: Int = 10_000, interval: Duration = .milliseconds(200), logger: Logger) {
        self.pool = pool
        self.capacity = capacity
        self.interval = interval
        self.logger = logger
    }

    public func record(_ completion: CompletionRecord) {
        state.withLock { s in
            s.buffer.append(completion)
            if s.buffer.count > capacity {
                s.dropped += s.buffer.count - capacity
                s.buffer.removeFirst(s.buffer.count - capacity)
            }
        }
    }

    /// Rows written, rows dropped for lack of room, and failed flushes so far.
    public var health: (written: Int, dropped: Int, failures: Int)? { counters }

    public var counters: (written: Int, dropped: Int, failures: Int) {
        state.withLock { ($0.written, $0.dropped, $0.failures) }
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await flush()
        }
        await flush()
    }

    /// Writes what is buffered; on failure the rows go back to the front of the buffer.
    public func flush() async {
        let batch: [CompletionRecord] = state.withLock { s in
            defer { s.buffer.removeAll() }
            return s.buffer
        }
        guard !batch.isEmpty else { return }
        do {
            try await pool.query("""
                INSERT INTO hone.completions (id, adapter, version, messages, response, timings, confidence, lowest_token_probability)
                SELECT id, adapter, nullif(split_part(version, '@v', 2), '')::integer, messages::jsonb, response,
                       jsonb_build_object('prompt_tokens', p, 'completion_tokens', c, 'seconds', s), mean, lowest
                FROM unnest(\(batch.map(\.id))::text[], \(batch.map(\.adapter))::text[], \(batch.map(\.version))::text[],
                            \(batch.map(\.messagesJSON))::text[], \(batch.map(\.response))::text[],
                            \(batch.map(\.promptTokens))::integer[], \(batch.map(\.completionTokens))::integer[],
                            \(batch.map(\.seconds))::float8[], \(batch.map(\.confidence))::float8[],
                            \(batch.map(\.lowestTokenProbability))::float8[])
                     AS t(id, adapter, version, messages, response, p, c, s, mean, lowest)
                ON CONFLICT (id) DO NOTHING
                """)
            state.withLock { $0.written += batch.count }
        } catch {
            let (failures, held) = state.withLock { s -> (Int, Int) in
                s.failures += 1
                s.buffer.insert(contentsOf: batch, at: 0)
                if s.buffer.count > capacity {
                    s.dropped += s.buffer.count - capacity
                    s.buffer.removeFirst(s.buffer.count - capacity)
                }
                return (s.failures, s.buffer.count)
            }
            if failures == 1 || failures % 50 == 0 {
                logger.warning("completion log cannot write; serving continues", metadata: [
                    "error": "\(error)", "completions.buffered": "\(held)", "completions.failures": "\(failures)",
                ])
            }
        }
    }
}
