import CBLAS

/// Row-major matrix product C (M, N) = α · op(A) · op(B) + β · C, where op(X) is X or Xᵀ.
/// A is (M, K) or, transposed, (K, M); B is (K, N) or (N, K). With `parallel`, the larger
/// of M and N is split over the pool, one single-threaded OpenBLAS call per part; without,
/// one call on the current thread (for use inside `Parallel.for` jobs).
public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int,
                 _ b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int, parallel: Bool = true) {
    guard m > 0, n > 0 else { return }
    func call(_ m: Int, _ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    let parts = min(Parallel.threads, max(m, n) / 16)
    guard parallel, parts > 1, m * n * k >= 1 << 18 else { return call(m, n, a, b, c) }
    if m >= n {
        Parallel.for(parts) { part in
            let rows = Parallel.range(part, of: parts, total: m)
            call(rows.count, n, transA ? a + rows.lowerBound : a + rows.lowerBound * lda, b, c + rows.lowerBound * ldc)
        }
    } else {
        Parallel.for(parts) { part in
            let cols = Parallel.range(part, of: parts, total: n)
            call(m, cols.count, a, transB ? b + cols.lowerBound * ldb : b + cols.lowerBound, c + cols.lowerBound)
        }
    }
}
