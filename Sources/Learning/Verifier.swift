import Foundation
import Generation
import JSON

/// An external check of a model's answer: the only thing, with references and user
/// corrections, that accepts a training example (the model's own critique never does).
/// The shapes are those of `jobs/task/schema.json`.
public enum Verifier: Sendable, Equatable {
    /// The answer, trimmed, equals `answer`.
    case exact(String)
    /// Equal after lowercasing, dropping punctuation and collapsing whitespace.
    case normalized(String)
    /// The regular expression matches somewhere in the answer.
    case regex(String)
    /// The answer contains `answer`, ignoring case.
    case contains(String)
    /// The answer contains every one of these words, ignoring case (corrections' probes).
    case containsAll([String])
    /// The first number in the answer is within `tolerance` of `answer`.
    case numeric(Double, tolerance: Double)
    /// The answer (or the first JSON object or array inside it) is valid under the schema.
    case jsonSchema(JSONSchema)
    /// The answer names `answer` and no other of `options`.
    case choice(options: [String], answer: String)

    /// The verdict on one answer, with a message a revise prompt can quote.
    public struct Verdict: Sendable, Equatable {
        public let passed: Bool
        public let message: String
    }

    /// Parses a verifier object (`{"type": "exact", "answer": "Paris"}`); throws with the reason.
    public init(_ json: JSONValue) throws {
        func field(_ key: String) throws -> JSONValue {
            guard let v = json[key] else { throw JSONError(message: "verifier \(json["type"]?.stringValue ?? "?") needs \"\(key)\"") }
            return v
        }
        func string(_ key: String) throws -> String {
            guard let s = try field(key).stringValue else { throw JSONError(message: "verifier field \"\(key)\" must be a string") }
            return s
        }
        switch json["type"]?.stringValue {
        case "exact": self = .exact(try string("answer"))
        case "normalized": self = .normalized(try string("answer"))
        case "regex":
            let pattern = try string("pattern")
            do { _ = try NSRegularExpression(pattern: pattern) } catch {
                throw JSONError(message: "verifier pattern \(pattern) is not a valid regular expression")
            }
            self = .regex(pattern)
        case "contains": self = .contains(try string("answer"))
        case "numeric":
            guard let answer = try field("answer").doubleValue else { throw JSONError(message: "verifier field \"answer\" must be a number") }
            self = .numeric(answer, tolerance: json["tolerance"]?.doubleValue ?? 1e-6)
        case "json_schema": self = .jsonSchema(try JSONSchema(try field("schema")))
        case "choice":
            guard let options = try field("options").arrayValue?.compactMap(\.stringValue), options.count >= 2 else {
                throw JSONError(message: "verifier field \"options\" must list at least two strings")
            }
            let answer = try string("answer")
            guard options.contains(answer) else { throw JSONError(message: "verifier answer \(answer) is not one of the options") }
            self = .choice(options: options, answer: answer)
        case let other: throw JSONError(message: "unknown verifier type \(other ?? "(none)")")
        }
    }

    /// Checks `output`.
    public func check(_ output: String) -> Verdict {
        let text = output.trimmingCharacters(in: .whitespacesAndNewlines)
        switch self {
        case .exact(let answer):
            return text == answer ? .pass : .fail("The answer must be exactly \"\(answer)\".")
        case .normalized(let answer):
            return Self.normalize(text) == Self.normalize(answer) ? .pass : .fail("The answer must be \"\(answer)\".")
        case .regex(let pattern):
            // The pattern was compiled when the verifier was parsed.
            let re = try! NSRegularExpression(pattern: pattern)
            let found = re.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
            return found ? .pass : .fail("The answer must match the pattern \(pattern).")
        case .contains(let answer):
            return text.lowercased().contains(answer.lowercased()) ? .pass : .fail("The answer must mention \"\(answer)\".")
        case .containsAll(let words):
            let have = Set(Self.words(text))
            let missing = words.filter { !have.contains($0.lowercased()) }
            return missing.isEmpty ? .pass : .fail("The answer must mention \(missing.joined(separator: ", ")).")
        case .numeric(let answer, let tolerance):
            guard let number = Self.firstNumber(in: text) else { return .fail("The answer must contain a number.") }
            return abs(number - answer) <= tolerance ? .pass : .fail("\(Self.format(number)) is not the right number.")
        case .jsonSchema(let schema):
            guard let value = Self.firstJSON(in: text) else { return .fail("The answer must be JSON.") }
            let failures = schema.validate(value)
            return failures.isEmpty ? .pass : .fail("The JSON is not valid: \(failures.prefix(3).map(\.description).joined(separator: "; ")).")
        case .choice(let options, let answer):
            let lower = text.lowercased()
            let named = options.filter { lower.contains($0.lowercased()) }
            if named == [answer] { return .pass }
            return .fail(named.isEmpty ? "The answer must be one of: \(options.joined(separator: ", "))."
                                       : "The answer must name exactly one option.")
        }
    }

    /// Lowercase words of letters and digits, in order.
    static func words(_ text: String) -> [String] { AdapterScope.words(text) }

    static func normalize(_ text: String) -> String { words(text).joined(separator: " ") }

    static func firstNumber(in text: String) -> Double? {
        let re = try! NSRegularExpression(pattern: #"-?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?"#)
        guard let m = re.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
              let r = Range(m.range, in: text) else { return nil }
        return Double(text[r].replacingOccurrences(of: ",", with: "."))
    }

    /// The whole text as JSON, else the first balanced `{…}` or `[…]` in it that parses.
    static func firstJSON(in text: String) -> JSONValue? {
        if let v = try? JSONValue(parsing: text) { return v }
        let chars = Array(text)
        for (i, c) in chars.enumerated() where c == "{" || c == "[" {
            let close: Character = c == "{" ? "}" : "]"
            var depth = 0
            var inString = false, escaped = false
            for j in i..<chars.count {
                let d = chars[j]
                if inString {
                    if escaped { escaped = false } else if d == "\\" { escaped = true } else if d == "\"" { inString = false }
                    continue
                }
                if d == "\"" { inString = true } else if d == c { depth += 1 } else if d == close {
                    depth -= 1
                    if depth == 0 {
                        if let v = try? JSONValue(parsing: String(chars[i...j])) { return v }
                        break
                    }
                }
            }
        }
        return nil
    }

    static func format(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }
}

extension Verifier.Verdict {
    static let pass = Verifier.Verdict(passed: true, message: "accepted")
    static func fail(_ message: String) -> Verifier.Verdict { .init(passed: false, message: message) }
}
