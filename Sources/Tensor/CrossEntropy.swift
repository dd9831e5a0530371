import Foundation

/// Softmax cross-entropy of logit rows against their target ids, forward and backward
/// fused: returns Σ_r −log softmax(logits[r])[targets[r]] and, when `dlogits` is given,
/// writes dlogits[r] = (softmax(logits[r]) − onehot(targets[r])) · gradScale, where
/// gradScale is d(loss)/d(that sum), e.g. 1 / the number of target tokens of the batch.
/// logits, dlogits: (rows, V); dlogits may be logits itself (overwritten in place). The
/// loss mask selects rows before the output head runs, so every row passed here counts.
/// Rows run in parallel; call it outside `Parallel.for`.
public func crossEntropy(logits: UnsafePointer<Float>, targets: [Int], vocab v: Int,
                         dlogits: UnsafeMutablePointer<Float>?, gradScale: Float) -> Double {
    var losses = [Double](repeating: 0, count: targets.count)
    losses.withUnsafeMutableBufferPointer { lp in
        Parallel.for(targets.count) { r in
            let row = logits + r * v
            let targetLogit = row[targets[r]]
            var maxLogit = -Float.infinity
            for i in 0..<v { maxLogit = max(maxLogit, row[i]) }
            var sum: Double = 0
            if let dlogits {
                let d = dlogits + r * v
                for i in 0..<v { d[i] = expf(row[i] - maxLogit); sum += Double(d[i]) }
                let k = Float(1 / sum) * gradScale
                for i in 0..<v { d[i] *= k }
                d[targets[r]] -= gradScale
            } else {
                for i in 0..<v { sum += Double(expf(row[i] - maxLogit)) }
            }
            lp[r] = Double(maxLogit) + log(sum) - Double(targetLogit)
        }
    }
    return losses.reduce(0, +)
}
