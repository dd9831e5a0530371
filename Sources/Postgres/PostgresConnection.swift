import CLibPQ
import Dispatch
import Foundation
import Logging

/// One libpq connection. Every blocking libpq call runs on the connection's own serial
/// dispatch queue, never on Swift's cooperative pool (2 threads here: one blocked call
/// would stall half of all async work).
///
/// Statements on one connection run one after another; use a `PostgresPool` for
/// concurrency. Cancelling the calling task sends a cancel request for the running
/// statement, which then fails with `CancellationError`.
public final class PostgresConnection: @unchecked Sendable {
    // Safe to share: `conn` is used only from `queue`, which is serial; the cancel handle,
    // the in-flight flag and `healthy` are guarded by `stateLock`; PQcancel is thread-safe.
    private let conn: OpaquePointer
    private let queue: DispatchQueue
    private let stateLock = NSLock()
    private var cancelHandle: OpaquePointer?
    private var statementInFlight = false
    private var healthy = true
    private var closed = false

    /// The server process id serving this connection (for `pg_terminate_backend`, logs).
    public let backendPID: Int32

    /// The logger statements log to (at trace level) and errors are reported with.
    public let logger: Logger

    private init(conn: OpaquePointer, queue: DispatchQueue, logger: Logger) {
        self.conn = conn
        self.queue = queue
        self.logger = logger
        self.cancelHandle = PQgetCancel(conn)
        self.backendPID = PQbackendPID(conn)
    }

    deinit {
        // No other reference exists, so nothing runs on `queue`; and deinit may itself run
        // on `queue` (the last reference dropped by a statement's closure), where
        // queue.sync would deadlock.
        if let cancelHandle { PQfreeCancel(cancelHandle) }
        if !closed { PQfinish(conn) }
    }

    /// Opens a connection from a URL (`postgresql://…`) or a `key=value` conninfo string,
    /// and sets the session up the way this layer decodes (UTC, ISO dates, UTF-8).
    public static func connect(_ conninfo: String, logger: Logger) async throws -> PostgresConnection {
        let queue = DispatchQueue(label: "hone.postgres.connection")
        let conn: OpaquePointer = try await withCheckedThrowingContinuation { continuation in
            queue.async {
                guard let conn = PQconnectdb(conninfo) else {
                    continuation.resume(throwing: PostgresError(kind: .connection, message: "libpq could not allocate a connection"))
                    return
                }
                guard PQstatus(conn) == CONNECTION_OK else {
                    let message = Self.errorMessage(conn)
                    PQfinish(conn)
                    continuation.resume(throwing: PostgresError(
                        kind: .connection,
                        message: "cannot connect to \(ConnectionString.redacted(conninfo)): \(message)"))
                    return
                }
                PQsetClientEncoding(conn, "UTF8")
                continuation.resume(returning: conn)
            }
        }
        let connection = PostgresConnection(conn: conn, queue: queue, logger: logger)
        try await connection.execute("SET TimeZone = 'UTC'")
        try await connection.execute("SET DateStyle = 'ISO, YMD'")
        return connection
    }

    /// False once a statement found the link to the server broken or the connection was
    /// closed; a pool drops such connections instead of reusing them.
    public var isOpen: Bool {
        stateLock.withLock { healthy }
    }

    /// Closes the connection; later statements fail with a connection error.
    public func close() {
        stateLock.withLock {
            if let cancelHandle { PQfreeCancel(cancelHandle) }
            cancelHandle = nil
            healthy = false
        }
        queue.sync {
            guard !closed else { return }
            closed = true
            PQfinish(conn)
        }
    }

    /// Runs one statement and returns its rows.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await run(query, cancellable: true)
    }

    /// Runs one statement for its effect; returns the affected row count.
    @discardableResult
    public func execute(_ query: PostgresQuery) async throws -> Int {
        try await run(query, cancellable: true).affectedRows
    }

    /// Runs `body` inside BEGIN … COMMIT; any error thrown rolls back and is rethrown.
    public func transaction<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await run("BEGIN", cancellable: true)
        do {
            let result = try await body(self)
            try await run("COMMIT", cancellable: false)
            return result
        } catch {
            // Not cancellable: a cancelled task must still leave the session clean.
            _ = try? await run("ROLLBACK", cancellable: false)
            throw error
        }
    }

    @discardableResult
    private func run(_ query: PostgresQuery, cancellable: Bool) async throws -> PostgresRows {
        if cancellable { try Task.checkCancellation() }
        let result: Result<PostgresRows, PostgresError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                queue.async {
                    continuation.resume(returning: self.runBlocking(query))
                }
            }
        } onCancel: {
            if cancellable { self.cancelInFlight() }
        }
        switch result {
        case .success(let rows):
            return rows
        case .failure(let error):
            if error.isQueryCanceled, cancellable, Task.isCancelled { throw CancellationError() }
            throw error
        }
    }

    /// Sends a cancel request if a statement is running now. Holding the lock while
    /// sending keeps the request from reaching a later statement of this connection.
    private func cancelInFlight() {
        stateLock.withLock {
            guard statementInFlight, let cancelHandle else { return }
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(cancelHandle, &buffer, Int32(buffer.count))
        }
    }

    /// Runs on `queue` only.
    private func runBlocking(_ query: PostgresQuery) -> Result<PostgresRows, PostgresError> {
        guard !closed else { return .failure(PostgresError(kind: .connection, message: "connection is closed")) }
        let count = query.binds.count
        var values = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        var lengths = [Int32](repeating: 0, count: count)
        var formats = [Int32](repeating: 0, count: count)
        var types = [Oid](repeating: 0, count: count)
        defer { for v in values { free(v) } }
        for (i, bind) in query.binds.enumerated() {
            switch bind {
            case .null:
                break
            case .text(let s):
                values[i] = strdup(s)
            case .bytea(let bytes):
                let buffer = malloc(max(bytes.count, 1))!.assumingMemoryBound(to: CChar.self)
                bytes.withUnsafeBytes { raw in
                    if let base = raw.baseAddress { memcpy(buffer, base, bytes.count) }
                }
                values[i] = buffer
                lengths[i] = Int32(bytes.count)
                formats[i] = 1
                types[i] = 17  // bytea
            }
        }
        stateLock.withLock { statementInFlight = true }
        let result: OpaquePointer? = values.withUnsafeBufferPointer { valuePointers in
            guard count > 0, let base = valuePointers.baseAddress else {
                return PQexecParams(conn, query.sql, 0, nil, nil, nil, nil, 0)
            }
            // libpq takes `const char * const *`; the buffers stay alive until `defer` frees them.
            return base.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: count) { valuesBase in
                PQexecParams(conn, query.sql, Int32(count), types, valuesBase, lengths, formats, 0)
            }
        }
        let up = PQstatus(conn) == CONNECTION_OK
        stateLock.withLock {
            statementInFlight = false
            healthy = healthy && up
        }
        guard let result else {
            return .failure(PostgresError(kind: .connection, message: Self.errorMessage(conn)))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return .success(Self.rows(of: result))
        default:
            return .failure(Self.error(of: result, conn: conn))
        }
    }

    static func rows(of result: OpaquePointer) -> PostgresRows {
        let columnCount = PQnfields(result)
        let rowCount = PQntuples(result)
        let columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
        var cells: [[String?]] = []
        cells.reserveCapacity(Int(rowCount))
        for r in 0..<rowCount {
            var row: [String?] = []
            row.reserveCapacity(Int(columnCount))
            for c in 0..<columnCount {
                if PQgetisnull(result, r, c) == 1 {
                    row.append(nil)
                } else {
                    let length = Int(PQgetlength(result, r, c))
                    let bytes = UnsafeRawBufferPointer(start: PQgetvalue(result, r, c), count: length)
                    row.append(String(decoding: bytes, as: UTF8.self))
                }
            }
            cells.append(row)
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? Int(rowCount)
        return PostgresRows(columns: columns, cells: cells, affectedRows: affected)
    }

    static func error(of result: OpaquePointer, conn: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let p = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: p)
        }
        let sqlState = field("C") ?? ""
        let message = field("M") ?? errorMessage(conn)
        let lost = PQstatus(conn) != CONNECTION_OK
        return PostgresError(
            kind: lost ? .connection : .server, sqlState: sqlState, message: message,
            detail: field("D"), hint: field("H"), constraint: field("n"),
            position: field("P").flatMap { Int($0) })
    }

    static func errorMessage(_ conn: OpaquePointer) -> String {
        String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
