/// out[t] = table[tokens[t]].   table: (V, C); out: (N, C).
/// (The model reads its quantized table row by row; this float version is the op's
/// definition that the backward below differentiates.)
public func embeddingForward(tokens: [Int], table: UnsafePointer<Float>, width c: Int, out: UnsafeMutablePointer<Float>) {
    for (t, token) in tokens.enumerated() {
        (out + t * c).update(from: table + token * c, count: c)
    }
}

/// Backward of `embeddingForward`: dtable[tokens[t]] += dout[t] (repeated tokens add up).
public func embeddingBackward(_ dout: UnsafePointer<Float>, tokens: [Int], width c: Int, dtable: UnsafeMutablePointer<Float>) {
    for (t, token) in tokens.enumerated() {
        for i in 0..<c { dtable[token * c + i] += dout[t * c + i] }
    }
}
