import Foundation

/// A bound parameter as libpq sends it: text, or binary for bytea (no escaping of blobs).
public enum PostgresValue: Sendable, Hashable {
    case null
    case text(String)
    case bytea([UInt8])
}

/// A Swift value that can be bound as a `$n` parameter.
public protocol PostgresEncodable: Sendable {
    /// The parameter as sent to the server.
    var postgresValue: PostgresValue { get }
}

/// A Swift value that can be read from a column in text format.
public protocol PostgresDecodable {
    /// Decodes the server's text representation; nil when it is not of this type.
    init?(postgresText: String)
}

extension String: PostgresEncodable, PostgresDecodable {
    public var postgresValue: PostgresValue { .text(self) }
    public init?(postgresText: String) { self = postgresText }
}

extension Int: PostgresEncodable, PostgresDecodable {
    public var postgresValue: PostgresValue { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int32: PostgresEncodable, PostgresDecodable {
    public var postgresValue: PostgresValue { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int64: PostgresEncodable, PostgresDecodable {
    public var postgresValue: PostgresValue { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Bool: PostgresEncodable, PostgresDecodable {
    public var postgresValue: PostgresValue { .text(self ? "true" : "false") }
    public init?(postgresText: String) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

extension Double: PostgresEncodable, PostgresDecodable {
    public var postgresValue: PostgresValue {
        if isNaN { return .text("NaN") }
        if isInfinite { return .text(self > 0 ? "Infinity" : "-Infinity") }
        return .text(String(self))
    }
    public init?(postgresText: String) {
        switch postgresText {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default: self.init(postgresText)
        }
    }
}

extension Date: PostgresEncodable, PostgresDecodable {
    /// Sent as an ISO 8601 UTC timestamp with microseconds, PostgreSQL's own resolution.
    public var postgresValue: PostgresValue {
        let seconds = timeIntervalSince1970
        var whole = seconds.rounded(.down)
        var micros = Int(((seconds - whole) * 1_000_000).rounded())
        if micros == 1_000_000 { whole += 1; micros = 0 }
        var t = time_t(whole)
        var parts = tm()
        gmtime_r(&t, &parts)
        let text = String(format: "%04d-%02d-%02d %02d:%02d:%02d.%06d+00",
                          parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                          parts.tm_hour, parts.tm_min, parts.tm_sec, micros)
        return .text(text)
    }

    /// Reads `timestamptz` text as the connection prints it (ISO style, time zone UTC):
    /// `2026-11-22 16:20:05.123456+00`.
    public init?(postgresText text: String) {
        let u = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= u.count else { return nil }
            var n = 0
            for c in u[from..<from + count] {
                guard c >= 48 && c <= 57 else { return nil }
                n = n * 10 + Int(c - 48)
            }
            return n
        }
        guard u.count >= 19, let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2) else { return nil }
        var i = 19
        var fraction = 0.0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                fraction += Double(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offset = 0
        if i < u.count, u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") {
            let sign = u[i] == UInt8(ascii: "+") ? 1 : -1
            guard let h = number(i + 1, 2) else { return nil }
            let m = (i + 3 < u.count && u[i + 3] == UInt8(ascii: ":")) ? (number(i + 4, 2) ?? 0) : 0
            offset = sign * (h * 3600 + m * 60)
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epoch = timegm(&parts)
        self = Date(timeIntervalSince1970: Double(epoch - offset) + fraction)
    }
}

/// Binary data; binds as bytea in binary format and decodes bytea's hex text format.
public struct Bytea: PostgresEncodable, PostgresDecodable, Hashable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var postgresValue: PostgresValue { .bytea(bytes) }
    public init?(postgresText text: String) {
        let u = Array(text.utf8)
        guard u.count >= 2, u[0] == UInt8(ascii: "\\"), u[1] == UInt8(ascii: "x"), u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity((u.count - 2) / 2)
        var i = 2
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        bytes = out
    }
}

/// JSON text bound as `jsonb`/`json` (the server parses it) and read back verbatim.
public struct JSONText: PostgresEncodable, PostgresDecodable, Hashable {
    public var text: String
    public init(_ text: String) { self.text = text }
    public var postgresValue: PostgresValue { .text(text) }
    public init?(postgresText: String) { text = postgresText }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresValue: PostgresValue {
        switch self {
        case .none: return .null
        case .some(let v): return v.postgresValue
        }
    }
}

extension Array: PostgresEncodable where Element: PostgresEncodable {
    /// An array literal `{…}` with every element quoted, so text with commas, quotes or
    /// braces survives; NULL elements are written unquoted.
    public var postgresValue: PostgresValue {
        var out = "{"
        for (i, element) in enumerated() {
            if i > 0 { out += "," }
            switch element.postgresValue {
            case .null: out += "NULL"
            case .text(let s): out += PostgresArray.quote(s)
            case .bytea(let b): out += PostgresArray.quote("\\x" + b.map { String(format: "%02x", $0) }.joined())
            }
        }
        return .text(out + "}")
    }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    public init?(postgresText: String) {
        guard let items = PostgresArray.parse(postgresText) else { return nil }
        var out: [Element] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let item, let value = Element(postgresText: item) else { return nil }
            out.append(value)
        }
        self = out
    }
}

/// PostgreSQL's one-dimensional array text format.
enum PostgresArray {
    static func quote(_ s: String) -> String {
        var out = "\""
        for c in s {
            if c == "\"" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out + "\""
    }

    /// Elements of `{a,"b c",NULL}`; nil when the text is not a one-dimensional array.
    static func parse(_ text: String) -> [String?]? {
        var chars = Substring(text)
        // Arrays with explicit bounds print as `[0:2]={…}`.
        if chars.first == "[", let eq = chars.firstIndex(of: "=") { chars = chars[chars.index(after: eq)...] }
        guard chars.first == "{", chars.last == "}" else { return nil }
        let body = chars.dropFirst().dropLast()
        if body.isEmpty { return [] }
        var items: [String?] = []
        var current = ""
        var quoted = false
        var wasQuoted = false
        var escape = false
        for c in body {
            if escape { current.append(c); escape = false; continue }
            if quoted {
                if c == "\\" { escape = true } else if c == "\"" { quoted = false } else { current.append(c) }
                continue
            }
            switch c {
            case "\"": quoted = true; wasQuoted = true
            case "{", "}": return nil  // nested arrays are not used here
            case ",":
                items.append(!wasQuoted && current == "NULL" ? nil : current)
                current = ""
                wasQuoted = false
            default: current.append(c)
            }
        }
        items.append(!wasQuoted && current == "NULL" ? nil : current)
        return items
    }
}
