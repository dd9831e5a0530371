import Foundation

/// out[r] = x[r] · rstd[r] · w, with rstd[r] = 1 / sqrt(mean(x[r]²) + eps).
/// x, out: (N, C); w: (C); rstd: (N), cached for the backward pass when given.
public func rmsNormForward(_ x: UnsafePointer<Float>, weight w: UnsafePointer<Float>, rows n: Int, width c: Int,
                           eps: Float, out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>? = nil) {
    Parallel.ranges(n, grain: 32) { rows in for r in rows {
        let xr = x + r * c, outr = out + r * c
        var ss: Float = 0
        for i in 0..<c { ss += xr[i] * xr[i] }
        let s = 1 / sqrtf(ss / Float(c) + eps)
        rstd?[r] = s
        for i in 0..<c { outr[i] = xr[i] * s * w[i] }
    } }
}

/// Backward of `rmsNormForward`: with g = w ⊙ dout,
/// dx += rstd · g − rstd³ / C · x · Σ(g ⊙ x); dw += Σ_r dout ⊙ x · rstd (when dw is given).
/// Rows run in parallel unless dw is wanted (its sum over rows has one writer).
public func rmsNormBackward(_ dout: UnsafePointer<Float>, x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                            rstd: UnsafePointer<Float>, rows n: Int, width c: Int,
                            dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>? = nil) {
    Parallel.ranges(n, grain: dweight == nil ? 32 : Int.max) { rows in for r in rows {
        let xr = x + r * c, dr = dout + r * c, dxr = dx + r * c
        let s = rstd[r]
        var dot: Float = 0
        for i in 0..<c { dot += w[i] * dr[i] * xr[i] }
        let k = s * s * s / Float(c) * dot
        for i in 0..<c { dxr[i] += s * w[i] * dr[i] - k * xr[i] }
        if let dweight {
            for i in 0..<c { dweight[i] += dr[i] * xr[i] * s }
        }
    } }
}
