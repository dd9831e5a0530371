import Foundation

/// A JSON Schema (the draft 2020-12 keywords that job payloads and verifiers use) that
/// validates values and explains each failure with a JSON pointer and a sentence.
///
/// Keywords the validator does not implement are refused when the schema is built, so a
/// schema can never look stricter than it is.
public struct JSONSchema: Sendable, Equatable {
    /// The schema document.
    public let document: JSONValue

    /// Annotation keywords that never change validation.
    static let annotations: Set<String> = [
        "$schema", "$id", "$comment", "title", "description", "examples", "default", "format",
        "$defs", "definitions", "deprecated", "readOnly", "writeOnly",
    ]
    /// Keywords this validator enforces.
    static let assertions: Set<String> = [
        "type", "enum", "const", "properties", "required", "additionalProperties", "items",
        "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "minimum",
        "maximum", "exclusiveMinimum", "exclusiveMaximum", "oneOf", "anyOf", "allOf", "not",
        "minProperties", "maxProperties", "$ref", "propertyNames",
    ]

    /// Builds a schema; throws when it uses a keyword this validator does not enforce or
    /// when a `pattern` is not a valid regular expression.
    public init(_ document: JSONValue) throws {
        self.document = document
        try Self.check(document, at: "#")
    }

    /// Parses and builds a schema from JSON text.
    public init(parsing text: String) throws {
        try self.init(try JSONValue(parsing: text))
    }

    private static func check(_ schema: JSONValue, at path: String) throws {
        switch schema {
        case .bool: return
        case .object(let members):
            for (key, value) in members {
                if annotations.contains(key) {
                    if key == "$defs" || key == "definitions", case .object(let defs) = value {
                        for (name, sub) in defs { try check(sub, at: "\(path)/\(key)/\(name)") }
                    }
                    continue
                }
                guard assertions.contains(key) else {
                    throw JSONError(message: "schema keyword \(key) at \(path) is not supported")
                }
                switch key {
                case "properties":
                    guard case .object(let props) = value else {
                        throw JSONError(message: "\(path)/properties must be an object")
                    }
                    for (name, sub) in props { try check(sub, at: "\(path)/properties/\(name)") }
                case "items", "additionalProperties", "not", "propertyNames":
                    try check(value, at: "\(path)/\(key)")
                case "oneOf", "anyOf", "allOf":
                    guard case .array(let subs) = value, !subs.isEmpty else {
                        throw JSONError(message: "\(path)/\(key) must be a non-empty array")
                    }
                    for (i, sub) in subs.enumerated() { try check(sub, at: "\(path)/\(key)/\(i)") }
                case "pattern":
                    guard let p = value.stringValue, (try? NSRegularExpression(pattern: p)) != nil else {
                        throw JSONError(message: "\(path)/pattern is not a valid regular expression")
                    }
                case "$ref":
                    guard let ref = value.stringValue, ref.hasPrefix("#") else {
                        throw JSONError(message: "\(path)/$ref must be a local reference (#/…)")
                    }
                default:
                    break
                }
            }
        default:
            throw JSONError(message: "schema at \(path) must be an object or a boolean")
        }
    }

    /// One reason a value does not match: where (a JSON pointer into the value) and why.
    public struct Failure: Sendable, Hashable, CustomStringConvertible {
        /// JSON pointer to the offending part of the value; empty for the whole value.
        public let pointer: String
        /// What is wrong, for a person.
        public let message: String
        /// The schema keyword that failed (`type`, `required`, `const`, …).
        public let keyword: String
        public var description: String { pointer.isEmpty ? message : "\(pointer): \(message)" }
    }

    /// All the reasons `value` does not match; empty when it matches.
    public func validate(_ value: JSONValue) -> [Failure] {
        var failures: [Failure] = []
        validate(value, against: document, pointer: "", into: &failures)
        return failures
    }

    private func resolve(_ ref: String) -> JSONValue? {
        var node = document
        for part in ref.dropFirst().split(separator: "/") {
            let key = part.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            guard let next = node[key] else { return nil }
            node = next
        }
        return node
    }

    private func validate(_ value: JSONValue, against schema: JSONValue, pointer: String, into failures: inout [Failure]) {
        func fail(_ message: String, _ keyword: String) {
            failures.append(Failure(pointer: pointer, message: message, keyword: keyword))
        }
        switch schema {
        case .bool(let allowed):
            if !allowed { fail("no value is allowed here", "false") }
            return
        case .object:
            break
        default:
            return
        }
        if let ref = schema["$ref"]?.stringValue {
            guard let target = resolve(ref) else { return fail("schema reference \(ref) does not resolve", "$ref") }
            validate(value, against: target, pointer: pointer, into: &failures)
        }
        if let type = schema["type"] {
            let allowed: [String]
            switch type {
            case .string(let t): allowed = [t]
            case .array(let ts): allowed = ts.compactMap(\.stringValue)
            default: allowed = []
            }
            let actual = value.typeName
            let matches = allowed.contains(actual)
                || (actual == "integer" && allowed.contains("number"))
                || (actual == "number" && allowed.contains("integer") && value.intValue != nil)
            if !matches {
                return fail("must be \(allowed.joined(separator: " or ")), not \(actual)", "type")
            }
        }
        if case .array(let options)? = schema["enum"], !options.contains(where: { Self.equal($0, value) }) {
            fail("must be one of \(options.map(\.jsonText).joined(separator: ", "))", "enum")
        }
        if let constant = schema["const"], !Self.equal(constant, value) {
            fail("must be \(constant.jsonText)", "const")
        }
        switch value {
        case .string(let s):
            let length = s.count
            if let min = schema["minLength"]?.intValue, length < min {
                fail(min == 1 ? "must not be empty" : "must be at least \(min) characters long", "minLength")
            }
            if let max = schema["maxLength"]?.intValue, length > max {
                fail("must be at most \(max) characters long (it has \(length))", "maxLength")
            }
            if let pattern = schema["pattern"]?.stringValue,
               let regex = try? NSRegularExpression(pattern: pattern),
               regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) == nil {
                fail("must match the pattern \(pattern)", "pattern")
            }
        case .int, .double:
            let number = value.doubleValue!
            if let min = schema["minimum"]?.doubleValue, number < min { fail("must be ≥ \(Self.format(min))", "minimum") }
            if let max = schema["maximum"]?.doubleValue, number > max { fail("must be ≤ \(Self.format(max))", "maximum") }
            if let min = schema["exclusiveMinimum"]?.doubleValue, number <= min { fail("must be > \(Self.format(min))", "exclusiveMinimum") }
            if let max = schema["exclusiveMaximum"]?.doubleValue, number >= max { fail("must be < \(Self.format(max))", "exclusiveMaximum") }
        case .array(let items):
            if let min = schema["minItems"]?.intValue, items.count < min { fail("must have at least \(min) items", "minItems") }
            if let max = schema["maxItems"]?.intValue, items.count > max { fail("must have at most \(max) items", "maxItems") }
            if schema["uniqueItems"] == .bool(true), Set(items).count != items.count { fail("items must be unique", "uniqueItems") }
            if let itemSchema = schema["items"] {
                for (i, item) in items.enumerated() {
                    validate(item, against: itemSchema, pointer: "\(pointer)/\(i)", into: &failures)
                }
            }
        case .object(let members):
            if let min = schema["minProperties"]?.intValue, members.count < min { fail("must have at least \(min) members", "minProperties") }
            if let max = schema["maxProperties"]?.intValue, members.count > max { fail("must have at most \(max) members", "maxProperties") }
            if case .array(let required)? = schema["required"] {
                for name in required.compactMap(\.stringValue).sorted() where members[name] == nil {
                    fail("missing required member \"\(name)\"", "required")
                }
            }
            let properties: [String: JSONValue]
            if case .object(let p)? = schema["properties"] { properties = p } else { properties = [:] }
            for name in members.keys.sorted() {
                let member = members[name]!
                let memberPointer = "\(pointer)/\(name)"
                if let names = schema["propertyNames"] {
                    validate(.string(name), against: names, pointer: memberPointer, into: &failures)
                }
                if let sub = properties[name] {
                    validate(member, against: sub, pointer: memberPointer, into: &failures)
                } else if let extra = schema["additionalProperties"] {
                    if extra == .bool(false) {
                        failures.append(Failure(pointer: memberPointer, message: "unknown member \"\(name)\"", keyword: "additionalProperties"))
                    } else {
                        validate(member, against: extra, pointer: memberPointer, into: &failures)
                    }
                }
            }
        default:
            break
        }
        if case .array(let subs)? = schema["allOf"] {
            for sub in subs { validate(value, against: sub, pointer: pointer, into: &failures) }
        }
        if case .array(let subs)? = schema["anyOf"] {
            let results = subs.map { sub -> [Failure] in
                var f: [Failure] = []
                validate(value, against: sub, pointer: pointer, into: &f)
                return f
            }
            if !results.contains(where: \.isEmpty) {
                // The closest alternative's reasons say more than "matches none".
                failures.append(contentsOf: Self.closest(results))
            }
        }
        if case .array(let subs)? = schema["oneOf"] {
            let results = subs.map { sub -> [Failure] in
                var f: [Failure] = []
                validate(value, against: sub, pointer: pointer, into: &f)
                return f
            }
            let passing = results.filter(\.isEmpty).count
            if passing == 0 {
                failures.append(contentsOf: Self.closest(results))
            } else if passing > 1 {
                fail("must match exactly one alternative, matches \(passing)", "oneOf")
            }
        }
        if let not = schema["not"] {
            var f: [Failure] = []
            validate(value, against: not, pointer: pointer, into: &f)
            if f.isEmpty { fail("must not match the excluded schema", "not") }
        }
    }

    /// The failures of the alternative the value most likely meant: one whose `const`
    /// discriminators match (a tagged union's `type`), then the one with fewest failures.
    static func closest(_ alternatives: [[Failure]]) -> [Failure] {
        alternatives.min { a, b in
            let aTag = a.contains { $0.keyword == "const" }
            let bTag = b.contains { $0.keyword == "const" }
            if aTag != bTag { return !aTag }
            return a.count < b.count
        } ?? []
    }

    /// JSON equality where 1 and 1.0 are the same number.
    static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        if let x = a.doubleValue, let y = b.doubleValue { return x == y }
        return a == b
    }

    static func format(_ d: Double) -> String {
        d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(d)
    }
}
