import Foundation
import Synchronization

/// Where passes spend their time, per op and per layer, with the floating-point work each
/// op does: `honebench profile` records one around the passes it measures, the per-op and
/// per-layer breakdown operators of model servers expect. With no profile recording, an op
/// pays one relaxed atomic load.
public final class OpProfile: Sendable {
    /// An op kind ("matmul.q", "attention", "head.backward", …) in a layer (nil: outside
    /// the blocks, e.g. the output head).
    public struct Key: Hashable, Sendable, Comparable {
        public let op: String
        public let layer: Int?

        public static func < (a: Key, b: Key) -> Bool { (a.op, a.layer ?? -1) < (b.op, b.layer ?? -1) }
    }

    /// What the calls of one key added up to.
    public struct Totals: Sendable {
        public var seconds = 0.0
        public var flops = 0.0
        /// Bytes of weights read (matrix products).
        public var bytes = 0.0
        public var calls = 0

        /// Billions of floating-point operations per second (0 for ops without a count).
        public var gflops: Double { seconds > 0 ? flops / seconds / 1e9 : 0 }
        /// Gigabytes of weights read per second.
        public var gbps: Double { seconds > 0 ? bytes / seconds / 1e9 : 0 }

        mutating func add(_ other: Totals) {
            seconds += other.seconds
            flops += other.flops
            bytes += other.bytes
            calls += other.calls
        }
    }

    private let totals = Mutex<[Key: Totals]>([:])
    private static let recording = Mutex<OpProfile?>(nil)
    private static let on = Atomic<Bool>(false)

    public init() {}

    /// Records the ops every thread runs while `body` runs (one profile records at a time).
    public func record<T>(_ body: () throws -> T) rethrows -> T {
        start()
        defer { Self.stop() }
        return try body()
    }

    /// `record` for async work: the ops of every thread while `body` runs, whoever they
    /// are for (a learning update's own passes and the generations it awaits).
    public func record<T>(_ body: () async throws -> T) async rethrows -> T {
        start()
        defer { Self.stop() }
        return try await body()
    }

    private func start() {
        Self.recording.withLock { precondition($0 == nil, "another profile is recording"); $0 = self }
        Self.on.store(true, ordering: .relaxed)
    }

    private static func stop() {
        on.store(false, ordering: .relaxed)
        recording.withLock { $0 = nil }
    }

    /// Runs `body` as op `op` (of block `layer`), doing `flops` floating-point operations
    /// and reading `bytes` of weights.
    @inline(__always)
    public static func measure<T>(_ op: @autoclosure () -> String, layer: Int? = nil, flops: Double = 0, bytes: Double = 0,
                                  _ body: () throws -> T) rethrows -> T {
        guard on.load(ordering: .relaxed) else { return try body() }
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let key = Key(op: op(), layer: layer)
            recording.withLock { profile in
                profile?.totals.withLock { $0[key, default: Totals()].add(Totals(seconds: seconds, flops: flops, bytes: bytes, calls: 1)) }
            }
        }
        return try body()
    }

    /// Every key's totals.
    public var entries: [Key: Totals] { totals.withLock { $0 } }

    /// Totals per op kind, over all layers, largest time first.
    public var byOp: [(op: String, totals: Totals)] {
        var out: [String: Totals] = [:]
        for (key, t) in entries { out[key.op, default: Totals()].add(t) }
        return out.map { ($0.key, $0.value) }.sorted { $0.totals.seconds > $1.totals.seconds }
    }

    /// Totals per layer over all its ops (nil: outside the blocks), in layer order.
    public var byLayer: [(layer: Int?, totals: Totals)] {
        var out: [Int: Totals] = [:]
        for (key, t) in entries { out[key.layer ?? -1, default: Totals()].add(t) }
        return out.keys.sorted().map { ($0 < 0 ? nil : $0, out[$0]!) }
    }
}
