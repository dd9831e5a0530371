import Hashing
import Foundation
import Synchronization

/// The API keys a server accepts: their SHA-256 digests (the keys themselves are never
/// kept) and what each may use. With no key at all the API is open, as on a machine of
/// one's own; once any key exists, every `/v1` request needs one. The daemon's key watcher
/// replaces the set whenever `hone.api_keys` changes.
public final class APIKeys: Sendable {
    /// One accepted key.
    public struct Key: Sendable, Equatable {
        /// SHA-256 of the key's bytes, in lowercase hex (as `hone.api_keys` stores it).
        public var digest: String
        /// Adapters it may use (the base model is shared by everyone).
        public var adapters: Set<String>
        /// An operator's key: every adapter, `/status` and `/metrics`.
        public var isOperator: Bool

        public init(digest: String, adapters: Set<String>, isOperator: Bool) {
            self.digest = digest
            self.adapters = adapters
            self.isOperator = isOperator
        }
    }

    /// What a request may do.
    public enum Access: Sendable, Equatable {
        /// No keys exist: everything is open.
        case open
        /// A valid key: these adapters (or all, for an operator).
        case key(Key)
        /// A key was needed and is missing or wrong.
        case denied(missing: Bool)

        /// Whether this access may use `adapter` (nil: the base model).
        public func mayUse(_ adapter: String?) -> Bool {
            switch self {
            case .open: true
            case .key(let key): adapter == nil || key.isOperator || key.adapters.contains(adapter!)
            case .denied: false
            }
        }

        /// Whether this access may read the operator pages.
        public var isOperator: Bool {
            switch self {
            case .open: true
            case .key(let key): key.isOperator
            case .denied: false
            }
        }
    }

    private let keys = Mutex<[Key]>([])

    public init(_ keys: [Key] = []) { self.keys.withLock { $0 = keys } }

    public func replace(_ new: [Key]) { keys.withLock { $0 = new } }

    public var count: Int { keys.withLock { $0.count } }

    /// The SHA-256 digest a key is stored and compared as, in lowercase hex.
    public static func digest(_ key: String) -> String {
        sha256Hex(Data(key.utf8))
    }

    /// A new random key: `hone-` and 32 random bytes in hex.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return "hone-" + hex((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// The key an `Authorization` header carries: `Bearer KEY` (API clients), or `Basic` with
    /// the key as the password (a browser's login prompt, for the status page).
    static func presentedKey(_ header: String?) -> String? {
        guard let header else { return nil }
        let lower = header.lowercased()
        if lower.hasPrefix("bearer ") { return String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces) }
        guard lower.hasPrefix("basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst("basic ".count)).trimmingCharacters(in: .whitespaces)),
              let pair = String(data: decoded, encoding: .utf8), let colon = pair.firstIndex(of: ":") else { return nil }
        return String(pair[pair.index(after: colon)...])
    }

    /// The access an `Authorization` header value grants. Digests are compared in constant
    /// time, every stored one, so the time taken tells nothing about which bytes matched.
    public func access(authorization: String?) -> Access {
        let all = keys.withLock { $0 }
        guard !all.isEmpty else { return .open }
        guard let key = Self.presentedKey(authorization) else { return .denied(missing: true) }
        let presented = Self.digest(key)
        var found: Key?
        for key in all where Self.constantTimeEqual(key.digest, presented) { found = key }
        return found.map { .key($0) } ?? .denied(missing: false)
    }

    static func constantTimeEqual(_ x: String, _ y: String) -> Bool {
        let a = Array(x.utf8), b = Array(y.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}
