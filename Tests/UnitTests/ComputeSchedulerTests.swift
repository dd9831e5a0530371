import Foundation
import Synchronization
import Tensor
import Testing

/// Serving before learning (ComputeScheduler), asserted by order and counts: a serving
/// loop never waits for a learning loop, learning runs at its lower priority, and it still
/// finishes while serving keeps every core busy.
@Suite("Compute scheduler: serving first, learning never starved", .serialized, .timeLimit(.minutes(2)))
struct ComputeSchedulerTests {
    /// Busy work the optimizer cannot remove: `n` rounds of a small hash.
    static func spin(_ n: Int) -> UInt64 {
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<n { x = (x ^ UInt64(i)) &* 0xBF58_476D_1CE4_E5B9; x ^= x >> 31 }
        return x
    }

    @Test("a serving loop runs to the end while a learning loop holds every learning thread")
    func servingDoesNotWaitForLearning() async throws {
        let compute = ComputeScheduler(threads: 2)
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let learningDone = Atomic<Bool>(false)
        // Both learning threads (the caller and its worker) block inside their tasks.
        let learning = Task {
            try await compute.run(.learning) {
                Parallel.for(2) { _ in
                    entered.signal()
                    release.wait()
                }
                learningDone.store(true, ordering: .sequentiallyConsistent)
            }
        }
        try await Parallel.onThread { entered.wait(); entered.wait() }

        // With one pool for both classes this loop queued behind the blocked one forever.
        let ran = Atomic<Int>(0)
        try await compute.run(.serving) { Parallel.for(8) { _ in ran.add(1, ordering: .relaxed) } }
        let servingRan = ran.load(ordering: .relaxed), learningEnded = learningDone.load(ordering: .sequentiallyConsistent)
        #expect(servingRan == 8)
        #expect(!learningEnded, "the serving loop ran before the learning loop ended")

        release.signal()
        release.signal()
        try await learning.value
        let ended = learningDone.load(ordering: .sequentiallyConsistent)
        #expect(ended)
    }

    @Test("learning threads run at the nice value of their share; serving threads at normal priority")
    func learningRunsAtLowerPriority() async throws {
        #expect(ComputeScheduler.nice(forShare: 0.1) == 10)
        #expect(ComputeScheduler.nice(forShare: 0.5) == 0)
        #expect(ComputeScheduler.nice(forShare: 0.25) == 5)
        #expect(ComputeScheduler.nice(forShare: 0.01) == 19)
        let compute = ComputeScheduler(threads: 2, learningShare: 0.25)
        #expect(compute.learningNice == 5)
        let learningThread = try await compute.run(.learning) {
            Parallel.for(4) { _ in _ = Self.spin(1000) }  // starts the learning pool's worker
            return ComputeScheduler.niceValue(ofThread: ComputeScheduler.currentThreadID)
        }
        #expect(learningThread == 5)
        // A thread bound to learning for life (the learner's batch scheduler) has a pool of its own.
        try await Parallel.onThread { compute.bind(.learning) { Parallel.for(4) { _ in _ = Self.spin(1000) } } }
        let workers = compute.workerIDs(.learning)
        #expect(workers.count == 2)
        for id in workers { #expect(ComputeScheduler.niceValue(ofThread: id) == 5) }
        let servingThread = try await compute.run(.serving) { ComputeScheduler.niceValue(ofThread: ComputeScheduler.currentThreadID) }
        #expect(servingThread == 0)
    }

    @Test("a learning loop finishes while serving loops keep every core busy, and each class's CPU time is counted")
    func learningIsNotStarved() async throws {
        let compute = ComputeScheduler(threads: 2)
        let before = compute.usage()
        let learningDone = Atomic<Bool>(false)
        let learning = Task {
            try await compute.run(.learning) {
                Parallel.for(2) { _ in _ = Self.spin(3_000_000) }
                learningDone.store(true, ordering: .sequentiallyConsistent)
            }
        }
        // Serving loops back to back on every core until the learning loop is done; a
        // starved learning class would never finish (the cap turns that into a failure).
        let servingLoops = try await compute.run(.serving) {
            var loops = 0
            while !learningDone.load(ordering: .sequentiallyConsistent) && loops < 5_000_000 {
                Parallel.for(Parallel.threads) { _ in _ = Self.spin(2000) }
                loops += 1
            }
            return loops
        }
        try await learning.value
        let ended = learningDone.load(ordering: .sequentiallyConsistent)
        #expect(ended, "learning starved for \(servingLoops) serving loops")
        let after = compute.usage()
        #expect(after[.learning]!.busySeconds > before[.learning]!.busySeconds)
        #expect(after[.serving]!.busySeconds > before[.serving]!.busySeconds)
    }
}
