import Synchronization

/// The one reference to the snapshot new requests use. A request reads it once at its
/// start and keeps that snapshot to its end; installs swap it atomically.
public final class SnapshotHolder: Sendable {
    private let current = Mutex<ModelSnapshot?>(nil)
    /// Serializes installs (validation runs outside `current`'s lock, readers never wait).
    private let installing = Mutex<Void>(())
    private let swapCount = Atomic<Int>(0)
    private let refusalCount = Atomic<Int>(0)
    /// Whether the adapters' versions are in place: false only while a daemon that serves a
    /// registry's adapters (`awaitingVersions: true`) has not finished its first look.
    private let versionsInPlace: Atomic<Bool>

    /// `awaitingVersions`: this holder serves adapters from a registry, so it is not ready
    /// with the base model alone, only after `versionsInstalled()` (a restarted replica
    /// would otherwise answer 404 for adapters it has not installed yet).
    public init(_ snapshot: ModelSnapshot? = nil, awaitingVersions: Bool = false) {
        current.withLock { $0 = snapshot }
        versionsInPlace = Atomic(!awaitingVersions)
    }

    /// The snapshot for a request starting now; nil until one is installed.
    public var snapshot: ModelSnapshot? { current.withLock { $0 } }

    /// A model is loaded and every adapter's version the registry named at the first look is
    /// installed (or refused): what `/readyz` reports.
    public var isReady: Bool { snapshot != nil && versionsInPlace.load(ordering: .acquiring) }

    /// The first look at the registry installed what it names.
    public func versionsInstalled() { versionsInPlace.store(true, ordering: .releasing) }

    /// Adapter versions installed since start.
    public var swaps: Int { swapCount.load(ordering: .relaxed) }

    /// Adapter versions refused since start (a blob that failed its checks); the one served stayed.
    public var refusals: Int { refusalCount.load(ordering: .relaxed) }

    /// Counts a version that was refused before or during `install`.
    public func refused() { refusalCount.wrappingAdd(1, ordering: .relaxed) }

    /// Makes `snapshot` the one new requests see.
    public func install(_ snapshot: ModelSnapshot) {
        current.withLock { $0 = snapshot }
    }

    /// Validates and warms `adapter` on the current base, then flips the reference to a
    /// snapshot serving it. A failing adapter throws and is never visible; requests
    /// already running keep the snapshot they started with.
    public func install(_ adapter: ServedAdapter) throws {
        try installing.withLock { _ in
            guard let base = snapshot else { throw SnapshotError("no model is loaded yet") }
            try base.validate(adapter)
            current.withLock { $0 = base.serving(adapter) }
            swapCount.wrappingAdd(1, ordering: .relaxed)
        }
    }
}

/// Why a snapshot could not be installed.
public struct SnapshotError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
