import CLibPQ
import Foundation
import Logging

/// A NOTIFY received on a LISTEN channel, or a sign that notifications may have been missed.
public enum PostgresNotificationEvent: Sendable, Equatable {
    /// `NOTIFY channel, 'payload'` arrived.
    case notification(channel: String, payload: String)
    /// The listening connection (re)connected and LISTENs again. Anything sent while it was
    /// down is lost, so a consumer should look for work as if notified.
    case connected
}

/// LISTEN on a dedicated connection and thread, delivered as an AsyncSequence.
///
/// The thread sleeps in `poll()` on the connection's socket and a wake pipe, so it costs
/// nothing while idle and wakes within a fraction of a millisecond of a NOTIFY. Every
/// `healthCheckInterval` of silence it runs `SELECT 1`; a broken connection is reopened
/// with exponential backoff, after which `.connected` is delivered again.
///
/// `run()` listens until the calling task is cancelled; `events` has a single consumer.
public final class PostgresListener: @unchecked Sendable {
    // Safe to share: the libpq connection lives only on the listener thread; `stopped`
    // is guarded by `lock`; the wake pipe is written from any thread (write(2) is atomic).
    public let events: AsyncStream<PostgresNotificationEvent>
    private let continuation: AsyncStream<PostgresNotificationEvent>.Continuation
    private let conninfo: String
    private let channels: [String]
    private let healthCheckInterval: Duration
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// - Parameters:
    ///   - conninfo: URL or conninfo of the database.
    ///   - channels: channel names; quoted as identifiers, so any text is safe.
    public init(conninfo: String, channels: [String], healthCheckInterval: Duration = .seconds(5), logger: Logger) {
        self.conninfo = conninfo
        self.channels = channels
        self.healthCheckInterval = healthCheckInterval
        self.logger = logger
        (events, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(4096))
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe() failed: \(errno)")
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Listens until the calling task is cancelled, then closes the connection and ends `events`.
    public func run() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    loop()
                    continuation.finish()
                    done.resume()
                }
                thread.name = "hone.postgres.listener"
                thread.start()
            }
        } onCancel: {
            stop()
        }
    }

    /// Ends `run()`; safe from any thread, more than once.
    public func stop() {
        lock.withLock { stopped = true }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func loop() {
        var backoff = 50  // ms
        while !isStopped {
            guard let conn = openListening() else {
                if waitForWake(timeoutMs: backoff) { return }
                backoff = min(backoff * 2, 2000)
                continue
            }
            backoff = 50
            continuation.yield(.connected)
            serve(conn)
            PQfinish(conn)
        }
    }

    /// The listening session's `application_name`.
    public static let applicationName = "hone listener"

    private func openListening() -> OpaquePointer? {
        guard let conn = PQconnectdb(conninfo) else { return nil }
        guard PQstatus(conn) == CONNECTION_OK else {
            logger.warning("listener cannot connect; retrying", metadata: [
                "postgres.error": "\(PostgresConnection.errorMessage(conn))",
            ])
            PQfinish(conn)
            return nil
        }
        // Named, so operators (and `ops/chaos`) can tell it apart in pg_stat_activity.
        _ = exec(conn, "SET application_name = '\(Self.applicationName)'")
        for channel in channels {
            let quoted = "\"" + channel.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            guard exec(conn, "LISTEN \(quoted)") else {
                logger.warning("LISTEN failed; retrying", metadata: ["postgres.error": "\(PostgresConnection.errorMessage(conn))"])
                PQfinish(conn)
                return nil
            }
        }
        return conn
    }

    /// Delivers notifications until the connection breaks or `stop()` is called.
    private func serve(_ conn: OpaquePointer) {
        let socket = PQsocket(conn)
        let timeoutMs = Int32(healthCheckInterval / .milliseconds(1))
        while !isStopped {
            var fds = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, 2, timeoutMs)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            if ready == 0 {
                // Silence: prove the connection still works before trusting it further.
                guard exec(conn, "SELECT 1") else {
                    logger.warning("listener connection failed its health check; reconnecting")
                    return
                }
            } else if PQconsumeInput(conn) == 0 {
                logger.warning("listener connection lost; reconnecting", metadata: [
                    "postgres.error": "\(PostgresConnection.errorMessage(conn))",
                ])
                return
            }
            while let notify = PQnotifies(conn) {
                let channel = String(cString: notify.pointee.relname)
                let payload = String(cString: notify.pointee.extra)
                PQfreemem(notify)
                continuation.yield(.notification(channel: channel, payload: payload))
            }
            if PQstatus(conn) != CONNECTION_OK { return }
        }
    }

    private func exec(_ conn: OpaquePointer, _ sql: String) -> Bool {
        guard let result = PQexec(conn, sql) else { return false }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK
    }

    /// Sleeps up to `timeoutMs`; true when woken by `stop()`.
    private func waitForWake(timeoutMs: Int) -> Bool {
        var fd = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
        _ = poll(&fd, 1, Int32(timeoutMs))
        return isStopped
    }
}
