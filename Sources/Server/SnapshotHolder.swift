import Generation
import Synchronization

/// The one reference to the snapshot new requests use. A request reads it once at its
/// start and keeps that snapshot to its end; `install` swaps it atomically.
public final class SnapshotHolder: Sendable {
    private let current = Mutex<ModelSnapshot?>(nil)

    public init(_ snapshot: ModelSnapshot? = nil) {
        current.withLock { $0 = snapshot }
    }

    /// The snapshot for a request starting now; nil until one is installed.
    public var snapshot: ModelSnapshot? { current.withLock { $0 } }

    /// Makes `snapshot` the one new requests see.
    public func install(_ snapshot: ModelSnapshot) {
        current.withLock { $0 = snapshot }
    }
}
