/// A SQL file split into statements, each with the line it starts on, so a failing
/// migration can say exactly which statement failed.
///
/// Splits on `;` outside of quotes ('…', E'…', "…"), dollar quotes ($$…$$, $tag$…$tag$)
/// and comments (-- … and nested /* … */). Statements holding only comments are skipped.
public struct SQLScript: Sendable {
    /// One statement of the script.
    public struct Statement: Sendable, Equatable {
        /// The statement text, without its terminating `;`.
        public let sql: String
        /// 1-based line in the file where the statement starts.
        public let line: Int
    }

    public let statements: [Statement]

    public init(_ text: String) {
        let chars = Array(text.unicodeScalars)
        var statements: [Statement] = []
        var current = String.UnicodeScalarView()
        var hasCode = false
        var line = 1
        var startLine = 1
        var i = 0

        func append(_ c: Unicode.Scalar) {
            if c == "\n" { line += 1 }
            current.append(c)
        }
        // Leading comments and blank lines are dropped, so a statement starts at its code.
        func markCode() {
            if !hasCode {
                hasCode = true
                startLine = line
                current = String.UnicodeScalarView()
            }
        }

        while i < chars.count {
            let c = chars[i]
            let next: Unicode.Scalar? = i + 1 < chars.count ? chars[i + 1] : nil
            if c == "-" && next == "-" {
                while i < chars.count && chars[i] != "\n" { append(chars[i]); i += 1 }
                continue
            }
            if c == "/" && next == "*" {
                var depth = 0
                repeat {
                    if chars[i] == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                        depth += 1; append(chars[i]); append(chars[i + 1]); i += 2
                    } else if chars[i] == "*" && i + 1 < chars.count && chars[i + 1] == "/" {
                        depth -= 1; append(chars[i]); append(chars[i + 1]); i += 2
                    } else {
                        append(chars[i]); i += 1
                    }
                } while depth > 0 && i < chars.count
                continue
            }
            if c == ";" {
                if hasCode {
                    statements.append(Statement(sql: String(current).trimmed, line: startLine))
                }
                current = String.UnicodeScalarView()
                hasCode = false
                i += 1
                continue
            }
            if c == " " || c == "\t" || c == "\n" || c == "\r" {
                append(c); i += 1
                continue
            }
            markCode()
            if c == "'" || c == "\"" {
                // E'…' strings allow backslash escapes; '' and "" are doubled quotes.
                let escapes = c == "'" && i > 0 && (chars[i - 1] == "E" || chars[i - 1] == "e")
                append(c); i += 1
                while i < chars.count {
                    let d = chars[i]
                    if escapes && d == "\\" && i + 1 < chars.count {
                        append(d); append(chars[i + 1]); i += 2
                        continue
                    }
                    append(d); i += 1
                    if d == c {
                        if i < chars.count && chars[i] == c { append(chars[i]); i += 1; continue }
                        break
                    }
                }
                continue
            }
            if c == "$", let tag = Self.dollarTag(chars, at: i) {
                for s in tag { append(s) }
                i += tag.count
                while i < chars.count {
                    if chars[i] == "$", Self.matches(chars, at: i, tag) {
                        for s in tag { append(s) }
                        i += tag.count
                        break
                    }
                    append(chars[i]); i += 1
                }
                continue
            }
            append(c); i += 1
        }
        if hasCode {
            statements.append(Statement(sql: String(current).trimmed, line: startLine))
        }
        self.statements = statements
    }

    /// `$$` or `$tag$` starting at `i`, or nil when the `$` is a parameter like `$1`.
    static func dollarTag(_ chars: [Unicode.Scalar], at i: Int) -> [Unicode.Scalar]? {
        var j = i + 1
        while j < chars.count {
            let c = chars[j]
            if c == "$" { return Array(chars[i...j]) }
            let isTagChar = c == "_" || (c.properties.isAlphabetic) || (j > i + 1 && c.properties.numericType != nil)
            if !isTagChar { return nil }
            j += 1
        }
        return nil
    }

    static func matches(_ chars: [Unicode.Scalar], at i: Int, _ tag: [Unicode.Scalar]) -> Bool {
        guard i + tag.count <= chars.count else { return false }
        for k in 0..<tag.count where chars[i + k] != tag[k] { return false }
        return true
    }
}

extension String {
    var trimmed: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
