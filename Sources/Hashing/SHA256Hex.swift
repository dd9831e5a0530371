import Crypto
import Foundation

/// SHA-256 of `bytes` in lowercase hex: how Hone names a base model file, an adapter
/// blob, a stored API key and a cache of base-model references, in one spelling that the
/// database's `CHECK (… ~ '^[0-9a-f]{64}$')` constraints accept.
public func sha256Hex(_ bytes: some DataProtocol) -> String {
    hex(SHA256.hash(data: bytes))
}

/// `bytes` in lowercase hex, two digits a byte.
public func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
