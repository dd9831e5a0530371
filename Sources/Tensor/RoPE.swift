import Foundation

/// Rotary position embedding over pairs (2i, 2i+1) of each head, the layout GGUF stores q
/// and k rows in (it makes this equal to Hugging Face's rotate_half on its permuted rows).
public struct RoPE: Sendable {
    /// D values per head.
    public let headDim: Int
    /// Inverse frequencies computed as PyTorch does (float32 pow), so positions agree.
    public let invFreq: [Float]   // (D/2)

    /// RoPE for heads of `headDim` values with frequency base `base` (e.g. 100000).
    public init(headDim: Int, base: Float) {
        self.headDim = headDim
        invFreq = (0..<(headDim / 2)).map { i in 1 / powf(base, Float(2 * i) / Float(headDim)) }
    }

    /// Rotates one row of `heads` heads (heads · D values) by position · invFreq.
    public func forward(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        rotate(x, heads: heads, position: position, sign: 1)
    }

    /// Backward of `forward`, in place on the gradient: a rotation's inverse is its
    /// transpose, the rotation by the negated angle.
    public func backward(_ dx: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        rotate(dx, heads: heads, position: position, sign: -1)
    }

    private func rotate(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int, sign: Float) {
        let d = headDim
        for i in 0..<(d / 2) {
            let angle = Float(position) * invFreq[i]
            let cs = cosf(angle), sn = sign * sinf(angle)
            for head in 0..<heads {
                let p = head * d + 2 * i
                let a = x[p], b = x[p + 1]
                x[p] = a * cs - b * sn
                x[p + 1] = a * sn + b * cs
            }
        }
    }
}
