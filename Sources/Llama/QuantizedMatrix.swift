import CKernels
import GGUF
import Foundation
import Synchronization
import Tensor

/// How matrix-vector products are computed.
public enum MatmulMode: Sendable {
    /// Weights dequantized to float32, float32 activations: matches the float reference.
    case exact
    /// Activations quantized to int16 per 32-value block, integer dot products with the
    /// quantized weights: the serving path.
    case fast
}

/// A weight matrix W (rows × cols, i.e. out × in) kept in its file type, in place in the
/// memory-mapped file. Float products dequantize it a tile or a few rows at a time; only
/// float16/bfloat16/float32 matrices keep a float32 copy (made on first use). Quantized ones
/// never do: copies of every matrix cost ~540 MB for SmolLM2 and stayed for good.
public final class QuantizedMatrix: @unchecked Sendable {
    // Safe to share: `data` points into an immutable mapping kept alive by `file`; the
    // float copy (float types only) is created once under `lock` and never mutated afterwards.
    public let rows: Int
    public let cols: Int
    public let type: GGMLType
    let data: UnsafeRawPointer
    let rowBytes: Int
    private let file: GGUFFile
    private let lock = Mutex<[Float]?>(nil)

    init(file: GGUFFile, info: GGUFTensorInfo) {
        precondition(info.dims.count == 2)
        self.file = file
        cols = info.dims[0]
        rows = info.dims[1]
        type = info.type
        data = file.data(of: info).baseAddress!
        rowBytes = info.type.bytes(for: info.dims[0])
    }

    /// Row `r` as float32.
    func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        hone_dequantize(Int32(type.rawValue), data + r * rowBytes, out, cols)
    }

    var isFloatType: Bool { type == .f32 || type == .f16 || type == .bf16 }

    /// The whole matrix as float32 (rows × cols), made once (float types only).
    func floats() -> [Float] {
        precondition(isFloatType, "a float32 copy of a quantized matrix")
        return lock.withLock { cached in
            if let cached { return cached }
            var out = [Float](repeating: 0, count: rows * cols)
            _ = out.withUnsafeMutableBufferPointer { p in
                hone_dequantize(Int32(type.rawValue), data, p.baseAddress, rows * cols)
            }
            cached = out
            return out
        }
    }

    /// How one product is computed. The choice depends on the sequence, never on what
    /// else shares the batch, so a request's output does not change with the batch.
    enum Kernel {
        /// float32 weights (cached copy) and activations: the reference.
        case float
        /// int16 activations against the quantized rows: decode of single tokens.
        case int16
        /// float32 GEMM over weights dequantized for this call: prompt chunks (prefill).
        case dequantizedGEMM
    }

    /// Runs `body` with the matrix as float32 (rows × cols): the cached copy when one was
    /// made (or the file holds floats), else a temporary dequantized for this call (a few
    /// MB) rather than float copies of the whole model kept alive.
    public func withFloats<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        if isFloatType {
            return try floats().withUnsafeBufferPointer { try body($0.baseAddress!) }
        }
        let (rows, cols, rowBytes, data, typeID) = (self.rows, self.cols, self.rowBytes, self.data, Int32(type.rawValue))
        var w = [Float](repeating: 0, count: rows * cols)
        w.withUnsafeMutableBufferPointer { wp in
            let base = wp.baseAddress!
            let chunks = min(rows, Parallel.threads * 4)
            Parallel.for(chunks) { chunk in
                let part = Parallel.range(chunk, of: chunks, total: rows)
                hone_dequantize(typeID, data + part.lowerBound * rowBytes, base + part.lowerBound * cols, part.count * cols)
            }
        }
        return try w.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    /// Weight rows dequantized per GEMM tile: 64 rows of 576 (or 1536) values stay in L2.
    static let tileRows = 64
    /// Training's products see hundreds of rows at once, and a tile's GEMM against them runs
    /// faster the deeper it is: learner steps (6 steps of ~1 230 tokens, release, 2 threads)
    /// trained in 21.5/19.7 s with 512-row tiles, 23.3 s with 256 and 27.1/23.5 s with the
    /// whole matrix dequantized per call (which also held 113 MB for the output head). The
    /// transposed product splits dy's rows instead of the tiles (one summation order per
    /// element, each thread dequantizing every tile): 22.2/22.6 s against 20.9/22.5 s.
    static let trainingMaxTileRows = 512

    /// Tile rows of training's products: at most `trainingMaxTileRows`, in a whole number of
    /// tiles per pool thread.
    var trainingTileRows: Int {
        let threads = Parallel.threads
        var tiles = (rows + Self.trainingMaxTileRows - 1) / Self.trainingMaxTileRows
        tiles = (tiles + threads - 1) / threads * threads
        return (rows + tiles - 1) / tiles
    }

    /// out (N, rows) = x · Wᵀ, dequantizing W a tile of rows at a time on each pool thread
    /// and multiplying it at once: no whole-matrix temporary (the output head alone would
    /// be 113 MB of fresh pages per prompt), and each tile is used while still in cache.
    private func tiledGEMM(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>, tileRows: Int = QuantizedMatrix.tileRows) {
        let (rows, cols, rowBytes, data, typeID) = (self.rows, self.cols, self.rowBytes, self.data, Int32(type.rawValue))
        let tiles = (rows + tileRows - 1) / tileRows
        let parts = min(Parallel.threads, tiles)
        Parallel.for(parts) { part in
            var tile = [Float](repeating: 0, count: tileRows * cols)
            tile.withUnsafeMutableBufferPointer { tp in
                let t = tp.baseAddress!
                for index in Parallel.range(part, of: parts, total: tiles) {
                    let first = index * tileRows, count = min(tileRows, rows - first)
                    hone_dequantize(typeID, data + first * rowBytes, t, count * cols)
                    // out[:, first..<first+count] = x · tileᵀ
                    gemm(transB: true, m: n, n: count, k: cols, x, lda: cols, t, ldb: cols, out + first, ldc: rows, parallel: false)
                }
            }
        }
    }

    /// dx (N, cols) += dy (N, rows) · W, dequantizing W a tile of rows at a time (the
    /// backward of a product: no whole-matrix temporary). The rows of dy are split between
    /// the pool threads and each thread runs through every tile, so each element of dx is
    /// summed in one order, tile after tile, as one GEMM sums its k blocks.
    private func tiledTransposedGEMM(_ dy: UnsafePointer<Float>, count n: Int, into dx: UnsafeMutablePointer<Float>, tileRows: Int) {
        let (rows, cols, rowBytes, data, typeID) = (self.rows, self.cols, self.rowBytes, self.data, Int32(type.rawValue))
        let tiles = (rows + tileRows - 1) / tileRows
        let parts = min(Parallel.threads, n)
        Parallel.for(parts) { part in
            let mine = Parallel.range(part, of: parts, total: n)
            var tile = [Float](repeating: 0, count: tileRows * cols)
            tile.withUnsafeMutableBufferPointer { tp in
                let t = tp.baseAddress!
                for index in 0..<tiles {
                    let first = index * tileRows, count = min(tileRows, rows - first)
                    hone_dequantize(typeID, data + first * rowBytes, t, count * cols)
                    // dx[mine] += dy[mine, first..<first+count] · tile
                    gemm(m: mine.count, n: cols, k: count, dy + mine.lowerBound * rows + first, lda: rows, t, ldb: cols, beta: 1,
                         dx + mine.lowerBound * cols, ldc: cols, parallel: false)
                }
            }
        }
    }

    /// Products of several quantized matrices of one input width with the same N vectors
    /// (q, k and v; gate and up) on the int16 kernel: the vectors are quantized once and all
    /// rows go through one parallel loop, not one per matrix (decode runs ~210 products per
    /// token, each a short loop). Each row's result is the bits `multiply` gives it.
    /// - Parameters: x: (N, cols); outs[i]: (N, matrices[i].rows).
    static func multiply(_ matrices: [QuantizedMatrix], _ x: UnsafePointer<Float>, count n: Int, into outs: [UnsafeMutablePointer<Float>]) {
        let cols = matrices[0].cols, blocks = cols / 32
        precondition(matrices.allSatisfy { $0.cols == cols && !$0.isFloatType } && outs.count == matrices.count)
        var q = [Int16](repeating: 0, count: n * cols)
        var scales = [hone_act_scale](repeating: hone_act_scale(), count: n * blocks)
        q.withUnsafeMutableBufferPointer { qp in
            scales.withUnsafeMutableBufferPointer { sp in
                for i in 0..<n { hone_quantize_activations(x + i * cols, cols, qp.baseAddress! + i * cols, sp.baseAddress! + i * blocks) }
            }
        }
        // Parts per matrix: (matrix, chunk, chunks). Where the kernels lay out three or more
        // vectors per call (AVX-512), two parts per thread: that layout cost ~5% of a
        // 16-sequence decode step at eight.
        let perThread = KernelLevel.active.batchesRows && n >= 3 ? 2 : 8
        var parts: [(Int, Int, Int)] = []
        for (i, m) in matrices.enumerated() {
            let chunks = min(m.rows, Parallel.threads * perThread)
            parts += (0..<chunks).map { (i, $0, chunks) }
        }
        q.withUnsafeBufferPointer { qp in
            scales.withUnsafeBufferPointer { sp in
                let qbase = qp.baseAddress!, sbase = sp.baseAddress!
                Parallel.for(parts.count) { index in
                    let (i, chunk, chunks) = parts[index]
                    let m = matrices[i]
                    let part = Parallel.range(chunk, of: chunks, total: m.rows)
                    hone_dot_q_rows_multi(Int32(m.type.rawValue), m.data + part.lowerBound * m.rowBytes, m.rowBytes, Int32(part.count),
                                          qbase, cols, sbase, blocks, Int32(n), cols, outs[i] + part.lowerBound, m.rows)
                }
            }
        }
    }

    /// out[n][r] = Σ_c W[r][c] · x[n][c] for N rows of x.
    /// - Parameters: x: (N, cols); out: (N, rows).
    func multiply(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>, kernel: Kernel) {
        let rows = rows, cols = cols
        if kernel == .dequantizedGEMM || (kernel == .float && n >= 8) {
            if isFloatType {
                floats().withUnsafeBufferPointer { w in
                    gemm(transB: true, m: n, n: rows, k: cols, x, lda: cols, w.baseAddress!, ldb: cols, out, ldc: rows)
                }
            } else {
                tiledGEMM(x, count: n, into: out)
            }
            return
        }
        let chunks = min(rows, Parallel.threads * 8)
        if kernel == .float || isFloatType {
            // A few vectors: float dot products with each row dequantized on its own (or
            // read from the float copy of a float-type matrix).
            func dots(_ copy: UnsafePointer<Float>?) {
                Parallel.for(chunks) { chunk in
                    var row = [Float](repeating: 0, count: cols)
                    row.withUnsafeMutableBufferPointer { rp in
                        for r in Parallel.range(chunk, of: chunks, total: rows) {
                            let wr: UnsafePointer<Float>
                            if let copy {
                                wr = copy + r * cols
                            } else {
                                self.row(r, into: rp.baseAddress!)
                                wr = UnsafePointer(rp.baseAddress!)
                            }
                            for i in 0..<n { out[i * rows + r] = hone_dot_f32(wr, x + i * cols, cols) }
                        }
                    }
                }
            }
            if isFloatType { floats().withUnsafeBufferPointer { dots($0.baseAddress!) } } else { dots(nil) }
            return
        }
        Self.multiply([self], x, count: n, into: [out])
    }
}

extension QuantizedMatrix: FrozenWeight {
    /// y (N, rows) = x · Wᵀ in float32 (training's products): tiles dequantized into cache,
    /// or the float copy of a float-type matrix.
    public func product(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>) {
        guard !isFloatType else { return multiply(x, count: n, into: y, kernel: .dequantizedGEMM) }
        tiledGEMM(x, count: n, into: y, tileRows: trainingTileRows)
    }

    /// dx (N, cols) += dy (N, rows) · W in float32.
    public func accumulateTransposedProduct(_ dy: UnsafePointer<Float>, count n: Int, into dx: UnsafeMutablePointer<Float>) {
        guard isFloatType else { return tiledTransposedGEMM(dy, count: n, into: dx, tileRows: trainingTileRows) }
        FloatWeight(floats(), rows: rows, cols: cols).accumulateTransposedProduct(dy, count: n, into: dx)
    }
}
