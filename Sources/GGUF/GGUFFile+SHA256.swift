import Hashing
import Foundation

extension GGUFFile {
    /// Hex SHA-256 of the whole file: the base-model identity that adapters and versions
    /// record, so an adapter is never applied to weights it was not trained on. Computed
    /// once per file (~0.1 s for 100 MB).
    public var sha256: String {
        digest.withLock { known in
            if let known { return known }
            let hex = sha256Hex(bytes)
            known = hex
            return hex
        }
    }
}
