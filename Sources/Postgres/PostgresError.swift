/// An error from PostgreSQL or from the connection to it.
///
/// `description` carries the SQLSTATE and the server's message but never bound values,
/// row data or connection secrets; `detail` (which may quote row values) is kept apart.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// What went wrong at the level a caller acts on.
    public enum Kind: Sendable, Equatable {
        /// The connection could not be opened or was lost; the query may not have run.
        case connection
        /// The server ran the statement and reported an error.
        case server
        /// A value in a row could not be decoded into the requested Swift type.
        case decoding
    }

    public var kind: Kind
    /// Five-character SQLSTATE, e.g. `23505` for a unique violation; empty when unknown.
    public var sqlState: String
    /// The primary message.
    public var message: String
    /// The server's DETAIL, which may quote row values: shown only where asked for.
    public var detail: String?
    /// The server's HINT.
    public var hint: String?
    /// The constraint that was violated, when the server names one.
    public var constraint: String?
    /// 1-based character position in the statement, when the server gives one.
    public var position: Int?

    public init(kind: Kind, sqlState: String = "", message: String, detail: String? = nil,
                hint: String? = nil, constraint: String? = nil, position: Int? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
        self.position = position
    }

    public var description: String {
        var text = sqlState.isEmpty ? message : "\(message) (SQLSTATE \(sqlState))"
        if let hint { text += "; hint: \(hint)" }
        return text
    }

    /// True for a statement stopped by a cancel request (SQLSTATE 57014).
    public var isQueryCanceled: Bool { sqlState == "57014" }
    /// True for a unique-constraint violation (SQLSTATE 23505).
    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// True for errors that say nothing about the statement, only the link to the server.
    public var isConnectionFailure: Bool { kind == .connection || sqlState.hasPrefix("08") || sqlState == "57P01" }
}

/// Connection strings with their password replaced, for logs and messages.
public enum ConnectionString {
    /// `postgresql://u:secret@h/db` → `postgresql://u:***@h/db`; `password=x` → `password=***`.
    public static func redacted(_ conninfo: String) -> String {
        var s = conninfo
        if let scheme = s.range(of: "://"), let at = s[scheme.upperBound...].firstIndex(of: "@") {
            let userinfo = s[scheme.upperBound..<at]
            if let colon = userinfo.firstIndex(of: ":") {
                s.replaceSubrange(s.index(after: colon)..<at, with: "***")
            }
        }
        for key in ["password=", "password = "] {
            var searchStart = s.startIndex
            while let r = s.range(of: key, range: searchStart..<s.endIndex) {
                let valueEnd = s[r.upperBound...].firstIndex(where: { $0 == " " || $0 == "&" }) ?? s.endIndex
                s.replaceSubrange(r.upperBound..<valueEnd, with: "***")
                searchStart = s.index(r.upperBound, offsetBy: 3, limitedBy: s.endIndex) ?? s.endIndex
            }
        }
        return s
    }
}
