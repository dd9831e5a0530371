import CBLAS
import CKernels
import Foundation

/// Work split over the machine's cores, on Hone's persistent C worker pool. OpenBLAS runs
/// single-threaded inside it: `gemm` splits products over the pool itself, so attention
/// jobs may call OpenBLAS from several pool threads at once without nested thread pools.
public enum Parallel {
    /// Threads used for matrix products (HONE_THREADS, else the core count).
    public static let threads: Int = {
        let n: Int
        if let s = getenv("HONE_THREADS"), let v = Int(String(cString: s)), v > 0 {
            n = v
        } else {
            n = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        }
        hone_pool_set_threads(Int32(n))
        openblas_set_num_threads(1)
        return n
    }()

    /// Runs `body(i)` for i in 0..<count spread over `threads` threads; returns when all
    /// ran. Not re-entrant: `body` must not call `Parallel.for` (or `gemm`) itself.
    public static func `for`(_ count: Int, _ body: (Int) -> Void) {
        _ = threads
        withoutActuallyEscaping(body) { escapable in
            // hone_parallel_for returns only after every call ran, so the closure (and
            // the buffer pointers it captures) outlives all uses.
            var box = escapable
            withUnsafeMutablePointer(to: &box) { context in
                hone_parallel_for(Int32(count), { context, index in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(index))
                }, context)
            }
        }
    }

    /// Runs `body` over 0..<total split into one contiguous range per thread, or in one
    /// call when `total` is below `grain` (threads are not worth waking for small loops).
    public static func ranges(_ total: Int, grain: Int = 64, _ body: (Range<Int>) -> Void) {
        let chunks = min(threads, total / max(grain, 1))
        guard chunks > 1 else { return body(0..<total) }
        self.for(chunks) { body(range($0, of: chunks, total: total)) }
    }

    /// The part `chunk` of `chunks` of 0..<total.
    public static func range(_ chunk: Int, of chunks: Int, total: Int) -> Range<Int> {
        (total * chunk / chunks)..<(total * (chunk + 1) / chunks)
    }
}

extension Parallel {
    /// Runs blocking work (a training step, a forward pass, a socket read) on a thread of
    /// its own and awaits it, so Swift's cooperative pool is never held by CPU-bound work.
    public static func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }
}
