import Foundation

/// Rotary position embedding. Llama GGUFs store q and k rows permuted so that rotated pairs
/// are adjacent, (2i, 2i+1), which equals Hugging Face's rotate_half on its own rows; Qwen2
/// GGUFs keep Hugging Face's order, whose pairs are (i, i + D/2) (llama.cpp's NEOX mode).
public struct RoPE: Sendable {
    /// Which values of a head rotate together.
    public enum Pairs: Sendable {
        case adjacent, halves
    }
    /// D values per head.
    public let headDim: Int
    public let pairs: Pairs
    /// Inverse frequencies computed as PyTorch does (float32 pow), so positions agree;
    /// divided by the file's `rope_freqs` factors when it has them (Llama 3.1's scaling).
    public let invFreq: [Float]   // (D/2)

    /// RoPE for heads of `headDim` values with frequency base `base` (e.g. 100000).
    public init(headDim: Int, base: Float, pairs: Pairs = .adjacent, frequencyFactors: [Float]? = nil) {
        self.headDim = headDim
        self.pairs = pairs
        invFreq = (0..<(headDim / 2)).map { i in
            let f = 1 / powf(base, Float(2 * i) / Float(headDim))
            return frequencyFactors.map { f / $0[i] } ?? f
        }
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

    /// The cosines and sines of one position's angles (D/2 each): a forward pass computes
    /// them once per row and rotates every layer's q and k with them (the per-call cosf and
    /// sinf were most of RoPE's time in decode, 60 calls a row a token).
    public struct Angles: Sendable {
        let cos: [Float], sin: [Float]
    }

    /// The angles of `position`, the values `forward(_:heads:position:)` computes.
    public func angles(_ position: Int) -> Angles {
        let angle = invFreq.map { Float(position) * $0 }
        return Angles(cos: angle.map(cosf), sin: angle.map(sinf))
    }

    /// `forward(_:heads:position:)` with the position's angles given: the same values.
    public func forward(_ x: UnsafeMutablePointer<Float>, heads: Int, angles: Angles) {
        rotate(x, heads: heads, cos: angles.cos, sin: angles.sin, sign: 1)
    }

    private func rotate(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int, sign: Float) {
        let a = angles(position)
        rotate(x, heads: heads, cos: a.cos, sin: a.sin, sign: sign)
    }

    private func rotate(_ x: UnsafeMutablePointer<Float>, heads: Int, cos: [Float], sin: [Float], sign: Float) {
        let d = headDim
        for i in 0..<(d / 2) {
            let cs = cos[i], sn = sign * sin[i]
            let (first, partner) = pairs == .adjacent ? (2 * i, 1) : (i, d / 2)
            for head in 0..<heads {
                let p = head * d + first
                let a = x[p], b = x[p + partner]
                x[p] = a * cs - b * sn
                x[p + partner] = a * sn + b * cs
            }
        }
    }
}
