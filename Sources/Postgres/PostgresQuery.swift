/// A statement with its bound parameters. Interpolated values become `$n` parameters,
/// never SQL text:
///
///     try await conn.query("SELECT id FROM hone.jobs WHERE kind = \(kind) LIMIT \(limit)")
///
/// SQL assembled at run time needs the deliberately awkward `PostgresQuery(unsafeSQL:)`.
public struct PostgresQuery: Sendable, ExpressibleByStringInterpolation {
    /// The statement text with `$1…$n` placeholders.
    public private(set) var sql: String
    /// The parameters, in placeholder order.
    public private(set) var binds: [PostgresValue]

    /// A statement whose text is trusted as written; `binds` fill its `$n` placeholders.
    public init(unsafeSQL sql: String, binds: [PostgresValue] = []) {
        self.sql = sql
        self.binds = binds
    }

    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, binds: stringInterpolation.binds)
    }

    /// Builds the statement text and the parameter list side by side.
    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [PostgresValue] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        /// Binds `value` as the next `$n` parameter.
        public mutating func appendInterpolation(_ value: some PostgresEncodable) {
            binds.append(value.postgresValue)
            sql += "$\(binds.count)"
        }

        /// Binds `value` as the next `$n` parameter; nil binds SQL NULL.
        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T?) {
            binds.append(value.postgresValue)
            sql += "$\(binds.count)"
        }

        /// Inserts trusted SQL text (a constant column list), not a parameter.
        public mutating func appendInterpolation(unsafe sql: String) {
            self.sql += sql
        }
    }
}
