/// The rows a statement returned, copied out of libpq (text format).
public struct PostgresRows: Sendable, Sequence {
    /// Column names in result order.
    public let columns: [String]
    /// Cell text per row; nil is SQL NULL.
    let cells: [[String?]]
    /// The command tag's row count (`UPDATE 3` → 3), for statements without rows too.
    public let affectedRows: Int

    public var count: Int { cells.count }
    public var isEmpty: Bool { cells.isEmpty }

    public subscript(index: Int) -> PostgresRow {
        PostgresRow(columns: columns, cells: cells[index])
    }

    /// The first row, or nil.
    public var first: PostgresRow? { isEmpty ? nil : self[0] }

    public func makeIterator() -> some IteratorProtocol<PostgresRow> {
        var index = 0
        return AnyIterator {
            guard index < cells.count else { return nil }
            defer { index += 1 }
            return self[index]
        }
    }
}

/// One row; cells are read by column name or position with the type the caller wants.
public struct PostgresRow: Sendable {
    public let columns: [String]
    let cells: [String?]

    /// The raw text of a column, nil for NULL.
    public func text(_ column: String) throws -> String? {
        guard let index = columns.firstIndex(of: column) else {
            throw PostgresError(kind: .decoding, message: "no column \"\(column)\" in the result (\(columns.joined(separator: ", ")))")
        }
        return cells[index]
    }

    /// The column decoded as `T`; throws for NULL or text that is not a `T`.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        guard let value = try decodeIfPresent(column, as: type) else {
            throw PostgresError(kind: .decoding, message: "column \"\(column)\" is NULL, expected \(T.self)")
        }
        return value
    }

    /// The column decoded as `T`, or nil for NULL; throws for text that is not a `T`.
    public func decodeIfPresent<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T? {
        guard let text = try text(column) else { return nil }
        guard let value = T(postgresText: text) else {
            // The value itself stays out of the message: it may be user data.
            throw PostgresError(kind: .decoding, message: "column \"\(column)\" is not a \(T.self)")
        }
        return value
    }

    /// The cell at `index` decoded as `T`; throws for NULL or text that is not a `T`.
    public func decode<T: PostgresDecodable>(at index: Int, as type: T.Type = T.self) throws -> T {
        guard let text = cells[index] else {
            throw PostgresError(kind: .decoding, message: "column \(index + 1) is NULL, expected \(T.self)")
        }
        guard let value = T(postgresText: text) else {
            throw PostgresError(kind: .decoding, message: "column \(index + 1) is not a \(T.self)")
        }
        return value
    }
}
