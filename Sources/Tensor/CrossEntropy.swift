import Foundation

/// A teacher's distribution over the next token at one target: its most likely tokens and
/// their probabilities, summing to 1. Training against it (distillation) pulls the whole
/// distribution toward the teacher's instead of only its top token.
public struct SoftTarget: Sendable, Equatable {
    public var tokens: [Int]
    public var probabilities: [Float]
    public init(tokens: [Int], probabilities: [Float]) {
        precondition(tokens.count == probabilities.count && !tokens.isEmpty)
        self.tokens = tokens
        self.probabilities = probabilities
    }
}

/// Softmax cross-entropy of logit rows against their target ids, forward and backward
/// fused: returns Σ_r −log softmax(logits[r])[targets[r]], how many targets are their
/// row's top-1 logit (the first maximum, found by the same pass that finds the max for
/// the softmax), and, when `dlogits` is given,
/// writes dlogits[r] = (softmax(logits[r]) − onehot(targets[r])) · gradScale, where
/// gradScale is d(loss)/d(that sum), e.g. 1 / the number of target tokens of the batch.
/// A row with a soft target uses its distribution p instead of the one-hot: the loss is
/// −Σ p·log softmax and the gradient softmax − p (distillation).
/// logits, dlogits: (rows, V); dlogits may be logits itself (overwritten in place). The
/// loss mask selects rows before the output head runs, so every row passed here counts.
/// Rows run in parallel; call it outside `Parallel.for`.
public func crossEntropy(logits: UnsafePointer<Float>, targets: [Int], soft: [SoftTarget?]? = nil, vocab v: Int,
                         dlogits: UnsafeMutablePointer<Float>?, gradScale: Float) -> (loss: Double, correct: Int) {
    var losses = [Double](repeating: 0, count: targets.count)
    var top1 = [Bool](repeating: false, count: targets.count)
    losses.withUnsafeMutableBufferPointer { lp in
        top1.withUnsafeMutableBufferPointer { tp in
            Parallel.for(targets.count) { r in
                let row = logits + r * v
                let teacher = soft?[r]
                // The target's share of the logits: one token, or the teacher's expectation.
                var targetLogit = Double(row[targets[r]])
                if let teacher {
                    targetLogit = 0
                    for (t, p) in zip(teacher.tokens, teacher.probabilities) { targetLogit += Double(p) * Double(row[t]) }
                }
                var maxLogit = -Float.infinity, argmax = 0
                for i in 0..<v where row[i] > maxLogit {
                    maxLogit = row[i]
                    argmax = i
                }
                tp[r] = argmax == targets[r]
                var sum: Double = 0
                if let dlogits {
                    let d = dlogits + r * v
                    for i in 0..<v { d[i] = expf(row[i] - maxLogit); sum += Double(d[i]) }
                    let k = Float(1 / sum) * gradScale
                    for i in 0..<v { d[i] *= k }
                    if let teacher {
                        for (t, p) in zip(teacher.tokens, teacher.probabilities) { d[t] -= p * gradScale }
                    } else {
                        d[targets[r]] -= gradScale
                    }
                } else {
                    for i in 0..<v { sum += Double(expf(row[i] - maxLogit)) }
                }
                lp[r] = Double(maxLogit) + log(sum) - targetLogit
            }
        }
    }
    return (losses.reduce(0, +), top1.filter { $0 }.count)
}
