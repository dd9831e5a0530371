import ArgumentParser
import Foundation
import JSON
import Logging
import Postgres
import Queue
import Registry

/// Options every database command shares: where the database is and how to print.
struct OperatorOptions: ParsableArguments {
    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Print JSON (one document) instead of a table, for scripts.")
    var json = false

    /// Runs `body` with a registry and queue on a small pool; a database error or a
    /// refused change is printed as `honectl: …` on stderr and exits 1.
    func run(_ body: (Registry, JobQueue) async throws -> Void) async throws {
        let url = try database.resolvedURL()
        var logger = Logger(label: "honectl")
        logger.logLevel = .error
        let pool = PostgresPool(conninfo: url, size: 2, connectTimeout: .seconds(5), logger: logger)
        do {
            try await body(Registry(pool: pool), JobQueue(pool: pool))
            await pool.close()
        } catch let error as ExitCode {
            await pool.close()
            throw error
        } catch let error as ValidationError {
            await pool.close()
            throw error
        } catch {
            await pool.close()
            Output.fail(error)
        }
    }
}

/// How honectl prints: aligned tables for people, JSON for scripts, colour only on a terminal.
enum Output {
    static let isTerminal = isatty(STDOUT_FILENO) == 1

    /// Prints `honectl: message` on stderr and exits 1 (the operation failed).
    static func fail(_ error: Error) -> Never {
        let message: String
        if let pg = error as? PostgresError { message = pg.message + (pg.hint.map { " (\($0))" } ?? "") } else { message = "\(error)" }
        FileHandle.standardError.write(Data("honectl: \(message)\n".utf8))
        Foundation.exit(1)
    }

    /// A failure with a message of our own.
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Columns padded to their widest cell; the header in bold on a terminal.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        let head = line(header)
        var out = isTerminal ? "\u{1B}[1m\(head)\u{1B}[0m\n" : head + "\n"
        for row in rows { out += line(row) + "\n" }
        return out
    }

    /// Prints a JSON value with sorted keys.
    static func json(_ value: JSONValue) {
        print(value.jsonText)
    }

    /// UTC timestamp, second precision: stable and sortable in tables.
    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: date)
    }

    static func isoTime(_ date: Date?) -> JSONValue {
        guard let date else { return .null }
        return .string(ISO8601DateFormatter().string(from: date))
    }

    static func version(_ v: Int?) -> String { v.map { "v\($0)" } ?? "-" }

    static func optional(_ v: Int?) -> JSONValue { v.map { .int($0) } ?? .null }
    static func optional(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
}
