import Logging

/// A bounded set of connections to one database. A caller leases a connection for the
/// length of a closure; connections found broken are dropped and replaced by a new
/// connection on the next lease, retried with exponential backoff.
public actor PostgresPool {
    /// Where to connect (URL or conninfo). Never logged unredacted.
    public nonisolated let conninfo: String
    /// The most connections open at once.
    public nonisolated let size: Int
    /// How long a lease keeps retrying to connect before it gives up.
    public nonisolated let connectTimeout: Duration
    private let logger: Logger

    private var idle: [PostgresConnection] = []
    private var open = 0
    private var waiters: [CheckedContinuation<PostgresConnection?, Never>] = []
    private var closed = false

    public init(conninfo: String, size: Int = 4, connectTimeout: Duration = .seconds(10), logger: Logger) {
        precondition(size > 0, "a pool needs at least one connection")
        self.conninfo = conninfo
        self.size = size
        self.connectTimeout = connectTimeout
        self.logger = logger
    }

    /// Runs `body` with a connection that no one else uses meanwhile.
    public nonisolated func withConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        do {
            let result = try await body(connection)
            await release(connection)
            return result
        } catch {
            await release(connection)
            throw error
        }
    }

    /// Runs `body` in a transaction on a leased connection.
    public nonisolated func transaction<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await withConnection { try await $0.transaction(body) }
    }

    /// Runs one statement on any connection.
    @discardableResult
    public nonisolated func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await withConnection { try await $0.query(query) }
    }

    /// Closes idle connections and refuses new leases; leased ones close on release.
    public func close() {
        closed = true
        for connection in idle { connection.close() }
        idle.removeAll()
        for waiter in waiters { waiter.resume(returning: nil) }
        waiters.removeAll()
    }

    private nonisolated func lease() async throws -> PostgresConnection {
        switch try await reserve() {
        case .existing(let connection):
            return connection
        case .new:
            do {
                return try await Self.connect(conninfo, timeout: connectTimeout, logger: logger)
            } catch {
                await giveBackSlot()
                throw error
            }
        }
    }

    private enum Reservation { case existing(PostgresConnection), new }

    private func reserve() async throws -> Reservation {
        while true {
            guard !closed else { throw PostgresError(kind: .connection, message: "the connection pool is closed") }
            while let connection = idle.popLast() {
                if connection.isOpen { return .existing(connection) }
                connection.close()
                open -= 1
            }
            if open < size {
                open += 1
                return .new
            }
            // Woken with a connection handed over, or with nil when a slot was freed.
            if let handedOver = await withCheckedContinuation({ waiters.append($0) }) {
                return .existing(handedOver)
            }
        }
    }

    private func release(_ connection: PostgresConnection) {
        guard connection.isOpen, !closed else {
            connection.close()
            giveBackSlot()
            return
        }
        if !waiters.isEmpty {
            waiters.removeFirst().resume(returning: connection)
        } else {
            idle.append(connection)
        }
    }

    private func giveBackSlot() {
        open -= 1
        if !waiters.isEmpty { waiters.removeFirst().resume(returning: nil) }
    }

    /// Connects, retrying with exponential backoff (50 ms doubling to 2 s) until `timeout`.
    public static func connect(_ conninfo: String, timeout: Duration, logger: Logger) async throws -> PostgresConnection {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var delay = Duration.milliseconds(50)
        while true {
            do {
                return try await PostgresConnection.connect(conninfo, logger: logger)
            } catch let error as PostgresError where clock.now + delay < deadline {
                logger.warning("postgres connect failed; retrying", metadata: [
                    "postgres.error": "\(error)", "retry.delay_ms": "\(Int(delay / .milliseconds(1)))",
                ])
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }
}
