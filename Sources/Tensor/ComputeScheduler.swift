import CKernels
import Foundation
import Synchronization

/// What a piece of CPU work is for; it decides the pool that runs its loops and the
/// priority the kernel gives its threads.
public enum WorkClass: String, Sendable, CaseIterable {
    /// Client requests: prompt chunks and decode steps. Normal priority.
    case serving
    /// Updates: training steps, drift and gate passes, loading new weights. A lower
    /// priority: it gets the cores serving leaves idle, and its share when serving is busy.
    case learning
}

/// CPU time one class of work used and waited for (from the kernel's per-thread schedstat).
public struct ComputeUsage: Sendable, Equatable {
    /// Seconds its threads ran on a core.
    public var busySeconds: Double = 0
    /// Seconds its threads were ready to run but waited for a core.
    public var waitSeconds: Double = 0
}

/// How the process's CPU work shares the cores (DESIGN.md, "Sharing the cores"): serving first,
/// learning in what is left, with a guaranteed share when serving keeps every core busy.
///
/// Each class has its own pool of `threads` threads, so neither ever waits for the other's
/// loops: with one shared pool, a decode step queued behind every loop of a training step
/// (each tens of ms) and streams fell from 31.5 to 5.9 tokens/s during updates. Serving
/// uses the default pool at normal priority. Learning's workers, and every thread that runs
/// learning work (`run(.learning)`), run at a higher nice value, which the kernel's
/// scheduler turns into a weight: when both classes want the cores, learning gets
/// `learningShare` of them and is preempted as soon as a serving thread wakes, without
/// learning work having to be cut into small pieces.
///
/// Learning has a second pool for the threads bound to it for life (the learner's batch
/// scheduler: its paraphrases, held-out checks and gate answers), so a held-out check
/// decodes while the next training step runs instead of taking turns with its loops at one
/// pool. With that, and pool callers that yield their core when a wait runs long (pool.c),
/// an update of 8 corrections in the daemon's configuration took ~48 s where it took ~69 s
/// (`honebench learn`, release, two alternated runs).
///
/// One per process: the daemon makes it and hands it to the serving scheduler and the
/// learner; threads bound to no class run their loops on the serving pool.
public final class ComputeScheduler: @unchecked Sendable {  // the pool pointer is immutable
    /// Threads per pool (the calling thread of a loop counts as one).
    public let threads: Int
    /// The share of a busy core learning gets when serving also wants it.
    public let learningShare: Double
    /// The nice value learning threads run at (the kernel's weight closest to the share).
    public let learningNice: Int32
    /// Learning work run through `run(_:_:)`: training steps, drift and gate passes.
    private let learningPool: OpaquePointer
    /// Threads bound to learning for life (`bind(_:_:)`): the learner's batch scheduler.
    private let learningBoundPool: OpaquePointer
    private let accounts = Mutex(Accounts())

    /// The kernel's scheduler weights for nice 0...19 (kernel/sched/core.c,
    /// sched_prio_to_weight): two threads on one core get time in proportion to them.
    static let niceWeights: [Double] = [1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
                                        110, 87, 70, 56, 45, 36, 29, 23, 18, 15]

    /// The nice value whose weight against nice 0 comes closest to `share` of a core.
    public static func nice(forShare share: Double) -> Int32 {
        let shares = niceWeights.map { $0 / (1024 + $0) }
        let best = shares.indices.min { abs(shares[$0] - share) < abs(shares[$1] - share) }!
        return Int32(best)
    }

    /// - Parameters:
    ///   - threads: threads per pool (HONE_THREADS, else the core count).
    ///   - learningShare: learning's share of a core serving also wants, between 0.015
    ///     and 0.5 (nice 19 and nice 0); 0.1 by default, measured in README.md, "Serving while learning".
    public init(threads: Int = Parallel.threads, learningShare: Double = 0.1) {
        self.threads = threads
        self.learningShare = learningShare
        learningNice = Self.nice(forShare: learningShare)
        learningPool = hone_pool_create(Int32(threads), learningNice)
        learningBoundPool = hone_pool_create(Int32(threads), learningNice)
    }

    /// The pool `run` sends `work`'s loops to (nil: the default pool).
    private func runPool(_ work: WorkClass) -> OpaquePointer? { work == .learning ? learningPool : nil }

    /// The pool a thread bound to `work` for life sends its loops to (nil: the default pool).
    private func boundPool(_ work: WorkClass) -> OpaquePointer? { work == .learning ? learningBoundPool : nil }

    /// Runs `body` on the calling thread as `work`: its loops go to that class's pool and
    /// its CPU time is counted for it. For threads that do one class of work for their
    /// whole life (the batch schedulers'; a learning one gets learning's second pool); other
    /// learning work goes through `run(_:_:)`, which gives it a thread of its own (a
    /// thread's nice value cannot be lowered again).
    public func bind<T>(_ work: WorkClass, _ body: () throws -> T) rethrows -> T {
        try enter(work, pool: boundPool(work), body)
    }

    /// Runs `body` on the calling thread as `work`, its loops on `pool`.
    private func enter<T>(_ work: WorkClass, pool: OpaquePointer?, _ body: () throws -> T) rethrows -> T {
        let tid = hone_thread_id()
        if work == .learning { _ = hone_thread_set_nice(learningNice) }
        let previous = hone_pool_bound()
        hone_pool_bind(pool)
        let start = ThreadTimes.read(tid) ?? ComputeUsage()
        accounts.withLock { $0.live[tid] = (work, start) }
        defer {
            let end = ThreadTimes.read(tid) ?? start
            accounts.withLock {
                $0.live[tid] = nil
                $0.finished[work, default: ComputeUsage()].add(end, minus: start)
            }
            hone_pool_bind(previous)
        }
        return try body()
    }

    /// Runs CPU-bound `work` on a thread of its own as class `work` and awaits it, so
    /// Swift's cooperative pool is never held by it.
    public func run<T: Sendable>(_ work: WorkClass, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await Parallel.onThread { [self] in try enter(work, pool: runPool(work), body) }
    }

    /// CPU time used and waited for, per class, since the scheduler was made: its pools'
    /// workers (the serving pool's for the serving class) and every thread while bound.
    public func usage() -> [WorkClass: ComputeUsage] {
        let workers = WorkClass.allCases.flatMap { work in workerIDs(work).map { ($0, work) } }
        let (finished, live) = accounts.withLock { ($0.finished, $0.live) }
        var out = finished
        for (tid, work) in workers {
            if let now = ThreadTimes.read(tid) { out[work, default: ComputeUsage()].add(now, minus: ComputeUsage()) }
        }
        for (tid, entry) in live {
            if let now = ThreadTimes.read(tid) { out[entry.work, default: ComputeUsage()].add(now, minus: entry.start) }
        }
        for work in WorkClass.allCases where out[work] == nil { out[work] = ComputeUsage() }
        return out
    }

    /// The calling thread's kernel id.
    public static var currentThreadID: Int32 { hone_thread_id() }

    /// The nice value of thread `tid` (for tests and `honectl cpu`).
    public static func niceValue(ofThread tid: Int32) -> Int32 { hone_thread_nice(tid) }

    /// The kernel thread ids of the pools that run `work`'s loops (started workers only).
    public func workerIDs(_ work: WorkClass) -> [Int32] {
        let pools = work == .learning ? [learningPool, learningBoundPool] : [hone_pool_default()]
        return pools.flatMap { pool in
            var ids = [Int32](repeating: 0, count: 64)
            let n = Int(hone_pool_worker_ids(pool, &ids, Int32(ids.count)))
            return ids[..<n]
        }
    }

    private struct Accounts {
        var finished: [WorkClass: ComputeUsage] = [:]
        var live: [Int32: (work: WorkClass, start: ComputeUsage)] = [:]
    }
}

extension ComputeUsage {
    mutating func add(_ now: ComputeUsage, minus start: ComputeUsage) {
        busySeconds += max(0, now.busySeconds - start.busySeconds)
        waitSeconds += max(0, now.waitSeconds - start.waitSeconds)
    }
}

/// A thread's time on a core and waiting for one, from /proc/self/task/TID/schedstat
/// ("run_ns wait_ns timeslices"); nil where the kernel does not keep them.
enum ThreadTimes {
    static func read(_ tid: Int32) -> ComputeUsage? {
        guard let text = try? String(contentsOfFile: "/proc/self/task/\(tid)/schedstat", encoding: .ascii) else { return nil }
        let fields = text.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard fields.count >= 2 else { return nil }
        return ComputeUsage(busySeconds: fields[0] / 1e9, waitSeconds: fields[1] / 1e9)
    }
}
