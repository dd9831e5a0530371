/// A frozen weight W (out × in) that multiplies float32 activations: the base model's
/// matrices in training, which get no gradient. A quantized matrix does its products
/// without a float32 copy of itself; `FloatWeight` is plain float32 memory.
public protocol FrozenWeight {
    /// y (N, out) = x (N, in) · Wᵀ.
    func product(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>)
    /// dx (N, in) += dy (N, out) · W: the input's gradient through `product`.
    func accumulateTransposedProduct(_ dy: UnsafePointer<Float>, count n: Int, into dx: UnsafeMutablePointer<Float>)
}

/// W as a float32 array (out, in).
public struct FloatWeight: FrozenWeight {
    public let w: [Float]
    public let rows: Int
    public let cols: Int

    public init(_ w: [Float], rows: Int, cols: Int) {
        precondition(w.count == rows * cols)
        self.w = w
        self.rows = rows
        self.cols = cols
    }

    public func product(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>) {
        gemm(transB: true, m: n, n: rows, k: cols, x, lda: cols, w, ldb: cols, y, ldc: rows)
    }

    public func accumulateTransposedProduct(_ dy: UnsafePointer<Float>, count n: Int, into dx: UnsafeMutablePointer<Float>) {
        gemm(m: n, n: cols, k: rows, dy, lda: rows, w, ldb: cols, beta: 1, dx, ldc: cols)
    }
}

/// The low-rank update of one linear layer: ΔW = scale · B · A, with A (R, in) and B (out, R).
public struct LoRAFactors {
    /// A: (R, in).
    public let a: UnsafePointer<Float>
    /// B: (out, R).
    public let b: UnsafePointer<Float>
    /// R.
    public let rank: Int
    /// alpha / R.
    public let scale: Float
    /// Bᵀ padded to a multiple of 16 rows (⌈R/16⌉·16, out), the rows past R zero, when the
    /// adapter keeps one for inference (`hone_lora_add`); nil otherwise.
    public let bt: UnsafePointer<Float>?
    /// Factors that the caller keeps alive for as long as this value is used.
    public init(a: UnsafePointer<Float>, b: UnsafePointer<Float>, rank: Int, scale: Float, bt: UnsafePointer<Float>? = nil) {
        self.a = a
        self.b = b
        self.rank = rank
        self.scale = scale
        self.bt = bt
    }
}

/// Where the gradients of a layer's LoRA factors accumulate.
public struct LoRAGradients {
    /// dA: (R, in).
    public let a: UnsafeMutablePointer<Float>
    /// dB: (out, R).
    public let b: UnsafeMutablePointer<Float>
    /// Gradient buffers that the caller keeps alive and zeroes before the first pass.
    public init(a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>) {
        self.a = a
        self.b = b
    }
}

/// y = x · Wᵀ + scale · (x · Aᵀ) · Bᵀ.   x: (N, in); w: (out, in); y: (N, out).
/// `u` (N, R) receives x · Aᵀ, which the backward pass needs.
public func linearForward(_ x: UnsafePointer<Float>, rows n: Int, inWidth: Int, outWidth: Int,
                          weight w: some FrozenWeight, lora: LoRAFactors?,
                          out y: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>?) {
    w.product(x, count: n, into: y)
    guard let lora, let u else { return }
    let r = lora.rank
    gemm(transB: true, m: n, n: r, k: inWidth, x, lda: inWidth, lora.a, ldb: inWidth, u, ldc: r)
    gemm(transB: true, m: n, n: outWidth, k: r, alpha: lora.scale, u, lda: r, lora.b, ldb: r, beta: 1, y, ldc: outWidth)
}

/// Backward of `linearForward`: dx += dy · W + scale · (dy · B) · A; dB += scale · dyᵀ · u;
/// dA += scale · (dy · B)ᵀ · x. W is frozen: no gradient.   dy: (N, out); dx: (N, in).
public func linearBackward(_ dy: UnsafePointer<Float>, x: UnsafePointer<Float>, u: UnsafePointer<Float>?,
                           rows n: Int, inWidth: Int, outWidth: Int,
                           weight w: some FrozenWeight, lora: LoRAFactors?, loraGradients: LoRAGradients?,
                           dx: UnsafeMutablePointer<Float>) {
    w.accumulateTransposedProduct(dy, count: n, into: dx)
    guard let lora, let u else { return }
    let r = lora.rank
    var dyB = [Float](repeating: 0, count: n * r)   // (N, R) = dy · B
    gemm(m: n, n: r, k: outWidth, dy, lda: outWidth, lora.b, ldb: r, &dyB, ldc: r)
    gemm(m: n, n: inWidth, k: r, alpha: lora.scale, dyB, lda: r, lora.a, ldb: inWidth, beta: 1, dx, ldc: inWidth)
    guard let g = loraGradients else { return }
    gemm(transA: true, m: outWidth, n: r, k: n, alpha: lora.scale, dy, lda: outWidth, u, ldb: r, beta: 1, g.b, ldc: r)
    gemm(transA: true, m: r, n: inWidth, k: n, alpha: lora.scale, dyB, lda: r, x, ldb: inWidth, beta: 1, g.a, ldc: inWidth)
}

/// y[n][j] += bias[j] for each of `rows` rows (nothing when `bias` is nil): the projection
/// biases some architectures add (Qwen2's q, k, v). Constant, so backward passes go through.
public func addBias(_ bias: [Float]?, rows: Int, to y: inout [Float]) {
    guard let bias else { return }
    let width = bias.count
    for n in 0..<rows {
        for j in 0..<width { y[n * width + j] += bias[j] }
    }
}
