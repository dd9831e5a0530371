import Foundation

/// out = silu(gate) ⊙ up, silu(g) = g · σ(g).   gate, up, out: (N · F) values.
public func swigluForward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    Parallel.ranges(count, grain: 4096) { part in
        for i in part {
            let g = gate[i]
            out[i] = g / (1 + expf(-g)) * up[i]
        }
    }
}

/// Backward of `swigluForward`: dgate = dout ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), dup = dout ⊙ silu(g)
/// (both overwritten).
public func swigluBackward(_ dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int,
                           dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>) {
    Parallel.ranges(count, grain: 4096) { part in
        for i in part {
            let g = gate[i]
            let sig = 1 / (1 + expf(-g))
            dup[i] = dout[i] * g * sig
            dgate[i] = dout[i] * up[i] * sig * (1 + g * (1 - sig))
        }
    }
}
