import CKernels
import Foundation

/// out = silu(gate) ⊙ up, silu(g) = g · σ(g).   gate, up, out: (N · F) values. The C kernel's
/// exponential gives the same bits at every kernel level.
public func swigluForward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    Parallel.ranges(count, grain: 4096) { part in
        hone_swiglu(gate + part.lowerBound, up + part.lowerBound, part.count, out + part.lowerBound)
    }
}

/// Backward of `swigluForward`: dgate = dout ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), dup = dout ⊙ silu(g)
/// (both overwritten), σ through the forward's exponential.
public func swigluBackward(_ dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int,
                           dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>) {
    Parallel.ranges(count, grain: 4096) { part in
        let i = part.lowerBound
        hone_swiglu_backward(dout + i, gate + i, up + i, part.count, dgate + i, dup + i)
    }
}
